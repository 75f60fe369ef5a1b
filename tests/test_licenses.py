import pytest

from passkit import licenses as L
from passkit.records import Candidate


@pytest.mark.parametrize(
    ("url", "lid"),
    [
        ("https://creativecommons.org/licenses/by/2.0/", "cc-by-2.0"),
        ("http://creativecommons.org/licenses/by/4.0", "cc-by-4.0"),
        ("https://www.creativecommons.org/licenses/by-sa/3.0/deed.de", "cc-by-sa-3.0"),
        ("creativecommons.org/licenses/by-nc/2.5/legalcode", "cc-by-nc-2.5"),
        ("https://creativecommons.org/licenses/by-nd-nc/2.0/jp/", "cc-by-nc-nd-2.0-jp"),
        ("https://creativecommons.org/licenses/by/2.0/jp/deed.ja", "cc-by-2.0-jp"),
        ("HTTPS://CreativeCommons.org/publicdomain/zero/1.0/", "cc0-1.0"),
        ("https://creativecommons.org/publicdomain/mark/1.0/", "pdm-1.0"),
    ],
)
def test_url_spellings(url, lid):
    assert L.from_url(url).id == lid


@pytest.mark.parametrize("bad", ["https://example.com/licenses/by/2.0/", "https://creativecommons.org/licenses/by/9.0/",
                                 "https://creativecommons.org/licenses/by-xx/2.0/", "https://creativecommons.org/licenses/by/4.0/jp/"])
def test_unknown_urls_are_refused(bad):
    with pytest.raises(L.LicenseError):
        L.from_url(bad)


def test_names_and_openverse_codes():
    assert L.from_name("CC BY-SA 4.0").id == "cc-by-sa-4.0"
    assert L.from_name("by", "2.0").id == "cc-by-2.0"
    assert L.from_name("cc0").id == "cc0-1.0"
    assert L.from_name("pdm", "1.0").id == "pdm-1.0"
    with pytest.raises(L.LicenseError, match="no version"):
        L.from_name("by")


def test_url_and_name_must_agree_but_url_may_add_a_port():
    assert L.normalise("by-nc-nd", "2.0", "https://creativecommons.org/licenses/by-nd-nc/2.0/jp/").id == "cc-by-nc-nd-2.0-jp"
    with pytest.raises(L.LicenseError) as e:
        L.normalise("by", "2.0", "https://creativecommons.org/licenses/by-nc/2.0/")
    assert e.value.reason == "license_conflict"
    with pytest.raises(L.LicenseError) as e:
        L.normalise(None, None, None)
    assert e.value.reason == "license_missing"


def test_policies():
    cc_by = L.policy("cc-by")
    pd = L.policy("by-or-public-domain")
    for fam in ("by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd"):
        for ver in L.VERSIONS:
            assert not cc_by.allows(L.get(fam, ver))
            assert not pd.allows(L.get(fam, ver))
    assert cc_by.allows(L.get("by", "2.0", "jp"))
    assert not cc_by.allows(L.get("cc0", "1.0"))
    assert pd.allows(L.get("cc0", "1.0")) and pd.allows(L.get("pdm", "1.0"))
    assert L.policy("cc-by", allow=["cc-by-sa-4.0"]).allows(L.get("by-sa", "4.0"))
    assert not L.policy("cc-by", deny=["cc-by-2.0"]).allows(L.get("by", "2.0"))
    with pytest.raises(ValueError, match="unknown licence policy"):
        L.policy("anything")


def _cand(**kw):
    base = dict(source="t", source_id="1", url="http://x/a.jpg", license="by", license_version="2.0",
                title="A tree", creator="Ann", landing_url="http://x/a")
    return Candidate(**{**base, **kw})


def test_gate_builds_attribution_and_strips_html():
    a = L.gate(_cand(creator='<a href="http://x/ann">Ann  Smith</a>'), L.policy("cc-by"))
    assert isinstance(a, L.Attribution)
    assert a.creator == "Ann Smith" and a.license_id == "cc-by-2.0"
    assert a.sentence == ('"A tree" by Ann Smith is licensed under CC BY 2.0. To view a copy of this license, '
                          "visit https://creativecommons.org/licenses/by/2.0/. Source: http://x/a")


def test_gate_rejections():
    pol = L.policy("cc-by")
    assert L.gate(_cand(license="by-nc"), pol)[0] == "license_not_allowed"
    assert L.gate(_cand(creator=None), pol) == ("attribution_incomplete", "missing creator")
    assert L.gate(_cand(title=None), pol) == ("attribution_incomplete", "missing title")  # needed before 4.0
    assert isinstance(L.gate(_cand(title=None, license_version="4.0"), pol), L.Attribution)
    assert L.gate(_cand(license="gpl"), pol)[0] == "license_unknown"
