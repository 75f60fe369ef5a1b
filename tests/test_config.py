
import pytest

from passkit.config import SpecError, load_spec, parse_spec
from tests.helpers import ROOT

BASE = {"name": "t", "version": "1", "source": {"kind": "demo"}}


def test_demo_spec_loads():
    spec = load_spec(ROOT / "pipelines" / "demo.yaml")
    assert spec.release_name == "demo-1.0.0"
    assert spec.license.policy == "by-or-public-domain"
    assert len(spec.spec_hash()) == 64


def test_default_policy_is_cc_by():
    assert parse_spec(BASE).license.policy == "cc-by"


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"fetch": {"thredas": 3}}, "fetch.thredas: unknown field; allowed here: allow_private, backoff"),
        ({"source": {"kind": "demo", "qureies": []}}, "source.qureies: unknown field; allowed here: kind, page_size, port, queries"),
        ({"people": {"detectors": [{"name": "mtcnn", "threshold": 2}]}}, "people.detectors.0.threshold"),
        ({"people": {"detectors": [{"name": "facefinder", "threshold": 0.5}]}}, "'mtcnn', 'hog'"),
        ({"license": {"policy": "anything-goes"}}, "license.policy: Input should be 'cc-by', 'by-or-public-domain' or 'custom'"),
        ({"license": {"allow": ["cc-by-9.0"]}}, "ids look like cc-by-4.0"),
        ({"image": {"max_side": "big"}}, "image.max_side"),
        ({"image": {"min_side": 600, "max_side": 512}}, "min_side (600) exceeds image.max_side (512)"),
    ],
)
def test_bad_fields_name_their_path_and_what_is_allowed(patch, expected):
    with pytest.raises(SpecError) as e:
        parse_spec({**BASE, **patch}, "bad.yaml")
    assert str(e.value).startswith("bad.yaml: the pipeline spec is not valid")
    assert expected in str(e.value)


def test_missing_required_and_not_a_mapping(tmp_path):
    with pytest.raises(SpecError, match="name: required field is missing"):
        parse_spec({"version": "1", "source": {"kind": "demo"}})
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="YAML mapping"):
        load_spec(p)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------- hostile spec files

SPEC_TAIL = 'name: t\nversion: "1"\nsource: {kind: demo}\n'


def _bomb(levels: int) -> str:
    """The "billion laughs": each level an alias list of nine of the level below (9**levels leaves)."""
    names = "abcdefghi"[:levels]
    lines = [f'{names[0]}: &{names[0]} ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip(names, names[1:], strict=False):
        lines.append(f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_when_loaded(tmp_path):
    import time

    p = tmp_path / "bomb.yaml"
    # six levels: half a million leaves, a few MB in a repr (nine levels, the attack, is gigabytes)
    p.write_text(_bomb(6) + SPEC_TAIL + "description: *f\n")
    t0 = time.monotonic()
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert time.monotonic() - t0 < 5
    assert "aliases expand to more than" in str(e.value) and len(str(e.value)) < 500
    p.write_text(_bomb(9) + SPEC_TAIL)  # unused, still refused: validation never sees it
    with pytest.raises(SpecError, match="aliases expand"):
        load_spec(p)


def test_recursive_alias_and_deep_nesting_are_spec_errors(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(SPEC_TAIL + "description: &a [*a]\n")
    with pytest.raises(SpecError, match="recursive alias"):
        load_spec(p)
    p.write_text(SPEC_TAIL + "description: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError, match="nested too deeply"):
        load_spec(p)


def test_modest_anchors_still_load(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text('name: t\nversion: &v "1"\ndescription: *v\nsource: {kind: demo}\n'
                 "people: {detectors: [{name: hog, threshold: &t 0.5, review: 0.25}]}\n"
                 "release: {blank_fraction: *t}\n".replace("0.5", "0.99"))
    spec = load_spec(p)
    assert spec.description == "1" and spec.release.blank_fraction == 0.99
    p.write_text(_bomb(3) + SPEC_TAIL)  # 729 leaves: within the bound, then refused as unknown fields
    with pytest.raises(SpecError, match="a: unknown field"):
        load_spec(p)


def test_long_values_are_cut_in_messages():
    with pytest.raises(SpecError) as e:
        parse_spec({**BASE, "name": "X" * 1_000_000, "description": [["y" * 100] * 100] * 100})
    msg = str(e.value)
    assert len(msg) < 2000 and "(1000000 characters)" in msg
    assert msg.count("\n") == 2  # the heading and one line per bad field


def test_spec_that_is_not_utf8_is_a_spec_error(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(SPEC_TAIL.encode() + "description: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"not UTF-8 text \(byte 0xe9 at offset \d+\); save the spec as UTF-8"):
        load_spec(p)


def test_a_flag_is_checked_by_the_spec_fields_own_bounds():
    from passkit.config import InputError, WorkSpec, check_field, field_bounds

    assert field_bounds(WorkSpec, "workers") == (1, 256)
    check_field(WorkSpec, "workers", 256, "--workers")
    for bad in (0, -3, 257, 100_000):
        with pytest.raises(InputError, match=rf"^--workers {bad}: Input should be .* use 1 to 256"):
            check_field(WorkSpec, "workers", bad, "--workers")
