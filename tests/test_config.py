
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
