"""The demo catalog's records: licence-documented sample photos from installed packages, plus one
entry for each way a build must reject a candidate, each with its expected outcome.

The photos ship inside scikit-image, scikit-learn, matplotlib and PyWavelets; their licences and
creators are the ones those packages document (see shared/data/person_dev/SOURCES.md). Next to the
images a build should keep, the catalog carries, on purpose, one entry for each way a build must
reject a candidate: people, a non-commercial licence, a missing creator, an exact duplicate, a
corrupt JPEG, an HTML page sent as image/jpeg, a 404 and an opt-out header. Each entry states its
expected outcome (`Entry.expect`) so tests can check a build end to end. Images that the catalog
generates itself are credited to "passkit demo generator"; no real photo is ever mislabelled.

Records only (no image bytes, no numpy): tests import `expected` from here cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

from passkit import licenses

CATALOG_VERSION = "1"
GENERATOR = "passkit demo generator"

# Expected outcomes, one per way a candidate can end in a build of the demo catalog.
EXPECTS = ("kept", "people", "license", "attribution", "duplicate", "decode", "not_image", "http_404", "optout")


@dataclass(frozen=True, slots=True)
class Entry:
    """One catalog record. `origin` says where the bytes come from:

    "<package>:<path inside the package>" a file shipped in an installed wheel;
    "pywt:ascent" the pywt.data.ascent() array, PNG-encoded with Pillow;
    "gen:<name>"  an image the demo draws itself (deterministic);
    "truncate:<origin>" the first 40 % of a real JPEG followed by garbage;
    "html"        an HTML page; "missing": nothing is served at the URL.
    """

    id: str
    file: str  # served as /images/<file>; the extension sets the Content-Type
    origin: str
    title: str
    license: str  # Openverse short code: "by", "by-nc", "cc0", "pdm"
    license_version: str
    creator: str | None
    expect: str
    tags: tuple[str, ...]
    creator_url: str | None = None
    # The work's page: the original where the package documents it, else the package's documentation
    # of the image; None (generated and broken entries, grace_hopper): /works/<id> on the catalog server.
    landing_url: str | None = None
    provider: str = "passkit-demo"
    category: str = "photograph"
    description: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers on the image


_SK = "scikit-image"
_SKL = "scikit-learn"
_SKDOC = "https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data."
_FLICKR_CHINA = "https://www.flickr.com/photos/danielbuechele/6061409035/"
_FLICKR_FLOWER = "https://www.flickr.com/photos/vultilion/6056698931/"

CATALOG: tuple[Entry, ...] = (
    # ---- kept: no people, allowed licence (under the by-or-public-domain policy), complete TASL
    Entry(
        "demo-china", "china.jpg", "sklearn:datasets/images/china.jpg", "Pagoda above a lake",
        "by", "2.0", "danielbuechele", "kept", ("architecture", "pagoda", "lake", "china", "trees"),
        creator_url="https://www.flickr.com/photos/danielbuechele/", landing_url=_FLICKR_CHINA,
        provider=_SKL, description="scikit-learn sample image china.jpg (sklearn/datasets/images/README.txt).",
    ),
    Entry(
        "demo-flower", "flower.jpg", "sklearn:datasets/images/flower.jpg", "Orange dahlia",
        "by", "2.0", "vultilion", "kept", ("flower", "dahlia", "orange", "plant"),
        creator_url="https://www.flickr.com/photos/vultilion/", landing_url=_FLICKR_FLOWER,
        provider=_SKL,
        description="scikit-learn sample image flower.jpg; its README's attribution line wrongly "
        "repeats danielbuechele, the linked Flickr page is by vultilion.",
    ),
    Entry(
        "demo-chelsea", "chelsea.png", "skimage:data/chelsea.png", "Chelsea the cat",
        "cc0", "1.0", "Stefan van der Walt", "kept", ("cat", "animal", "pet"),
        landing_url=_SKDOC + "chelsea", provider=_SK,
        description="skimage.data.chelsea: 'No copyright restrictions. CC0 by the photographer'.",
    ),
    Entry(
        "demo-coffee", "coffee.png", "skimage:data/coffee.png", "Coffee cup",
        "cc0", "1.0", "Rachel Michetti", "kept", ("coffee", "cup", "drink", "table"),
        landing_url=_SKDOC + "coffee", provider=_SK,
        description="skimage.data.coffee: courtesy of Pikolo Espresso Bar, CC0 by the photographer.",
    ),
    Entry(
        "demo-brick", "brick.png", "skimage:data/brick.png", "Brick wall texture (Bricks25)",
        "cc0", "1.0", "CC0Textures", "kept", ("brick", "wall", "texture"), provider=_SK,
        landing_url="https://cc0textures.com/view.php?tex=Bricks25", category="photograph",
        description="skimage.data.brick: from CC0Textures Bricks25, rotated, cropped and scaled.",
    ),
    Entry(
        "demo-grass", "grass.png", "skimage:data/grass.png", "Grass texture",
        "cc0", "1.0", "linolafett", "kept", ("grass", "texture", "green", "plant"),
        creator_url="https://www.deviantart.com/linolafett",
        landing_url="https://www.deviantart.com/linolafett/art/Grass-01-434853879", provider=_SK,
        description="skimage.data.grass: from DeviantArt, CC0.",
    ),
    Entry(
        "demo-cell", "cell.png", "skimage:data/cell.png", "Cell floating in saline",
        "cc0", "1.0", "Paul Müller et al.", "kept", ("cell", "microscopy", "hologram"),
        landing_url=_SKDOC + "cell", provider=_SK,
        description="skimage.data.cell: quantitative phase image, CC0 (Müller et al., Optics Express 2018).",
    ),
    Entry(
        "demo-hubble-deep-field", "hubble_deep_field.jpg", "skimage:data/hubble_deep_field.jpg",
        "Hubble eXtreme Deep Field", "pdm", "1.0", "NASA", "kept", ("hubble", "galaxies", "space", "stars"),
        landing_url="http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/", provider=_SK,
        description="skimage.data.hubble_deep_field: captured by NASA, public domain.",
    ),
    Entry(
        "demo-text", "text.png", "skimage:data/text.png", "Handwritten text on a corner",
        "pdm", "1.0", "Wikipedia contributor (File:Corner.png)", "kept", ("text", "handwriting", "paper"),
        landing_url="https://en.wikipedia.org/wiki/File:Corner.png", provider=_SK,
        description="skimage.data.text: no known copyright restrictions, released into the public domain.",
    ),
    Entry(
        "demo-clock-motion", "clock_motion.png", "skimage:data/clock_motion.png", "Wall clock, motion blur",
        "pdm", "1.0", "Stefan van der Walt", "kept", ("clock", "blur", "motion"),
        landing_url=_SKDOC + "clock", provider=_SK,
        description="skimage.data.clock: released into the public domain by the photographer.",
    ),
    # ---- people: allowed licences, rejected by the people filter
    Entry(
        "demo-astronaut", "astronaut.png", "skimage:data/astronaut.png", "Astronaut Eileen Collins",
        "pdm", "1.0", "NASA", "people", ("astronaut", "portrait", "space"),
        landing_url="https://flic.kr/p/r9qvLn", provider=_SK,
        description="skimage.data.astronaut: NASA Great Images, public domain. Shows a person.",
    ),
    Entry(
        "demo-camera", "camera.png", "skimage:data/camera.png", "Cameraman",
        "cc0", "1.0", "Lav Varshney", "people", ("camera", "tripod", "photographer"),
        landing_url=_SKDOC + "camera", provider=_SK,
        description="skimage.data.camera: CC0 by the photographer. Shows a person.",
    ),
    Entry(
        "demo-grace-hopper", "grace_hopper.jpg", "matplotlib:mpl-data/sample_data/grace_hopper.jpg",
        "Portrait of Grace Hopper", "pdm", "1.0", "US Navy", "people", ("portrait", "navy", "uniform"),
        provider="matplotlib",
        description="matplotlib sample_data/grace_hopper.jpg; believed public domain, US Navy portrait, "
        "unverified (matplotlib states no licence). Shows a person.",
    ),
    Entry(
        "demo-ascent", "ascent.png", "pywt:ascent", "Ascent to the top",
        "pdm", "1.0", "public-domain-image.com", "people", ("stairs", "tower", "architecture"),
        landing_url="http://www.public-domain-image.com/people-public-domain-images-pictures/",
        provider="pywavelets",
        description="pywt.data.ascent(): derived from accent-to-the-top.jpg at public-domain-image.com "
        "(public domain per the PyWavelets docstring); the photographer is not named, the credit goes to "
        "the site. Two small people on a stair tower.",
    ),
    # ---- licence gate: generated images, never real photos relabelled
    Entry(
        "demo-gradient", "gradient_study.jpg", "gen:gradient", "Gradient study with shapes",
        "by-nc", "2.0", GENERATOR, "license", ("gradient", "shapes", "abstract"),
        category="illustration", description="Drawn by the demo; non-commercial licence, refused by policy.",
    ),
    Entry(
        "demo-rings", "rings.jpg", "gen:rings", "Concentric rings",
        "by", "4.0", None, "attribution", ("rings", "circles", "abstract"),
        category="illustration",
        description="Drawn by the demo; CC BY without a creator, so the credit cannot be given.",
    ),
    # ---- dedup: same bytes as demo-china under another id, title and URL
    Entry(
        "demo-china-repost", "summer_palace_repost.jpg", "sklearn:datasets/images/china.jpg",
        "Summer Palace tower (repost)", "by", "2.0", "danielbuechele", "duplicate",
        ("architecture", "tower", "beijing"),
        creator_url="https://www.flickr.com/photos/danielbuechele/", landing_url=_FLICKR_CHINA,
        provider=_SKL, description="Byte-identical copy of demo-china; the release keeps one.",
    ),
    # ---- image check and fetch failures
    Entry(
        "demo-flower-truncated", "dahlia_upload.jpg", "truncate:sklearn:datasets/images/flower.jpg",
        "Orange dahlia (interrupted upload)", "by", "2.0", "vultilion", "decode", ("flower", "dahlia"),
        creator_url="https://www.flickr.com/photos/vultilion/", landing_url=_FLICKR_FLOWER, provider=_SKL,
        description="First 40 % of flower.jpg followed by garbage: a JPEG that does not decode.",
    ),
    Entry(
        "demo-harbour", "harbour_at_dusk.jpg", "html", "Harbour at dusk",
        "by", "4.0", GENERATOR, "not_image", ("harbour", "boats", "dusk"),
        description="The URL answers with an HTML page labelled Content-Type: image/jpeg.",
    ),
    Entry(
        "demo-lighthouse", "lighthouse.jpg", "missing", "Lighthouse on the cliffs",
        "by", "4.0", GENERATOR, "http_404", ("lighthouse", "cliffs", "sea"),
        description="Nothing is served at the URL: 404.",
    ),
    # ---- politeness: the image response opts out of AI training
    Entry(
        "demo-gravel", "gravel.png", "skimage:data/gravel.png", "Gravel texture (Gravel04)",
        "cc0", "1.0", "CC0Textures", "optout", ("gravel", "stones", "texture"),
        landing_url="https://cc0textures.com/view.php?tex=Gravel04", provider=_SK,
        headers=(("X-Robots-Tag", "noai"),),
        description="skimage.data.gravel, CC0; served with X-Robots-Tag: noai, so a polite build skips it.",
    ),
)

# Left out on purpose: moon, page, motorcycle (scikit-image) and aero (PyWavelets) state no licence;
# retina and ihc are human tissue (a policy edge case); coins is "no known copyright restrictions",
# not a licence; horse (CC0 clipart silhouette, no person) makes the yolox_nano person detector fire
# (0.51 against a 0.50 threshold), and PicoDet scores rocket (skimage.data.rocket, SpaceX, public
# domain: a launch plume) 0.65 against 0.612, so their outcomes would depend on which detector weights
# are installed (both are false rejections, counted in person_dev's measured false-rejection rate).

BY_ID: dict[str, Entry] = {e.id: e for e in CATALOG}


def expected(policy: str = "by-or-public-domain") -> dict[str, str]:
    """source_id -> expected outcome under a licence policy.

    `Entry.expect` assumes "by-or-public-domain" (the demo pipeline's policy). The licence gate runs
    before fetching, so under "cc-by" every CC0/PDM entry ends as "license" instead.
    """
    pol = licenses.policy(policy)
    out = {}
    for e in CATALOG:
        allowed = pol.allows(licenses.get(e.license, e.license_version))
        out[e.id] = e.expect if allowed else "license"
    return out
