"""croissant.json: the release described in Croissant 1.1 (JSON-LD), with the Responsible-AI extension.

The rest of the ecosystem (dataset search, mlcroissant, TFDS, Hugging Face) reads dataset metadata in
this form. It describes files, never records, so it stays small at any release size (a few hundred
bytes per shard):

- the dataset: name, description, the licences' URLs (jurisdiction ports with their own), creator,
  dates from the manifest (pinned by SOURCE_DATE_EPOCH), version, `conformsTo` Croissant 1.1 and RAI 1.0;
- `distribution`: every shard, index.parquet, rejected.parquet and attribution.csv as a FileObject with
  its sha256 and size, and the JPEGs inside the shards as a FileSet;
- `recordSet`: `samples` over index.parquet, whose fields carry each sample's licence (URL, SPDX id),
  creator, title, credit line and source, mapped with `equivalentProperty` to schema.org's licence and
  attribution properties and to PROV's derivation; `images` over the FileSet; `licenses`, the licences
  of the release with their SPDX ids and counts, inline;
- the RAI properties, written from the release's own facts: how candidates were collected, what each
  stage removed (the manifest's counts), the people filter's detectors and human review counts, what
  personal information is and is not in the release, its limitations and the takedown process.

Paths are relative to the file, so the description stays true wherever the release is copied or
published. The bytes are a pure function of the manifest and the files it names (sorted keys, fixed
order, no clock).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from passkit import licenses
from passkit.shards import sha256_file

if TYPE_CHECKING:
    from passkit.release.documents import IndexSummary

CROISSANT_FILE = "croissant.json"
CONFORMS_TO = ["http://mlcommons.org/croissant/1.1", "http://mlcommons.org/croissant/RAI/1.0"]
# The JSON-LD context mlcroissant writes for Croissant 1.1 (mlcroissant._src.core.rdf.make_context),
# plus PROV-O for the samples' derivation; the tests check it against the installed mlcroissant.
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileObject": "cr:fileObject",
    "fileProperty": "cr:fileProperty",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "name": {"@container": "@language"},
    "parentField": "cr:parentField",
    "path": "cr:path",
    "prov": "http://www.w3.org/ns/prov#",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
TABLES = ("index.parquet", "rejected.parquet")
# dataType for Croissant's RAI extension's dataCollectionType, by source kind
COLLECTION_TYPE = {
    "openverse": ["Web API"], "commons": ["Web API"], "flickr": ["Web API"], "demo": ["Web API"],
    "yfcc100m": ["Secondary Data analysis", "Web Scraping"], "urllist": ["Secondary Data analysis", "Web Scraping"],
    "folder": ["Others"],
}

# index.parquet's columns in the `samples` RecordSet: (column, field name, dataType, equivalentProperty, what it is).
# Field names differ from a schema.org property unless they mean it: a RecordSet typed sc:ImageObject maps a
# field whose name is a property of that type to it (Croissant's implicit mapping), so the registry id is
# `license_id`, not `license`.
SAMPLE_FIELDS: tuple[tuple[str, str, str, str | list[str] | None, str], ...] = (
    ("key", "key", "sc:Text", None, "The sample's key: its `<key>.jpg` and `<key>.json` in the shard."),
    ("shard", "shard", "sc:Text", None, "The shard that holds the sample, relative to this file."),
    ("sha256", "sha256", "sc:Text", "sc:sha256", "sha256 of the released JPEG."),
    ("width", "width", "sc:Integer", None, "Width of the released JPEG in pixels."),
    ("height", "height", "sc:Integer", None, "Height of the released JPEG in pixels."),
    ("title", "title", "sc:Text", "sc:name", "The work's title, as its source published it."),
    ("creator", "creator", "sc:Text", "sc:creator", "The work's creator, as its source credits them."),
    ("creator_url", "creator_url", "sc:URL", None, "The creator's page at the source."),
    ("landing_url", "landing_url", "sc:URL", "sc:isBasedOn", "The work's page at its source: the work this image is an adaptation of."),
    ("source_url", "source_url", "sc:URL", "prov:wasDerivedFrom", "The image file this sample was derived from (resized, re-encoded)."),
    ("provider", "provider", "sc:Text", "sc:provider", "Where the work was found (a collection or site)."),
    ("license", "license_id", "sc:Text", None, "passkit's licence id (a jurisdiction port keeps its code)."),
    ("license_spdx", "license_spdx", "sc:Text", None, "The licence's SPDX id (LicenseRef- for a port the SPDX list lacks)."),
    ("license_name", "license_name", "sc:Text", None, "The licence's name."),
    ("license_url", "license_url", "sc:URL", "sc:license", "The licence the work is used under: its exact deed, port included."),
    ("attribution", "attribution", "sc:Text", "sc:creditText", "The credit line the licence asks for, to keep with every copy."),
    ("modification", "modification", "sc:Text", None, "What was changed from the source image."),
    ("source", "source", "sc:Text", None, "The passkit source the candidate came from."),
    ("source_id", "source_id", "sc:Text", None, "The candidate's id at that source."),
)


def write_croissant(release_dir: Path, manifest: dict[str, Any], index: IndexSummary) -> str:
    """Write croissant.json into `release_dir` (after the shards, tables and attribution.csv); returns its name."""
    import pyarrow.parquet as pq

    d = Path(release_dir)
    columns = set(pq.read_schema(d / "index.parquet").names)  # an older release's index may lack a few
    doc = croissant(manifest, index, {name: _entry(d / name) for name in (*TABLES, "attribution.csv")
                                      if (d / name).is_file()}, columns)
    (d / CROISSANT_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    return CROISSANT_FILE


def _entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def croissant(manifest: dict[str, Any], index: IndexSummary, files: dict[str, dict[str, Any]],
              columns: set[str] | None = None) -> dict[str, Any]:
    """The Croissant document of a release, from its manifest, its index summary, the sha256 and size of
    the table files (`files`: name -> {sha256, bytes}) and the columns index.parquet has (None: all of
    SAMPLE_FIELDS')."""
    shards = [s for s in manifest.get("shards") or [] if isinstance(s, dict)]
    lics = _licences(index)
    spec = manifest.get("spec") or {}
    contact = (spec.get("fetch") or {}).get("contact")
    created = manifest["created"]
    creator: dict[str, Any] = {
        "@type": "sc:Organization",
        "name": f"The builders of {manifest['release']}",
        "description": "Whoever ran passkit to build this release; the spec's fetch.contact reaches them.",
    }
    if contact:
        creator["url"] = contact
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": manifest["name"],
        "alternateName": manifest["release"],
        "description": (manifest.get("description") or "").strip() or "An image dataset built with passkit.",
        "version": manifest["version"],
        "datePublished": created,
        "dateCreated": created,
        "dateModified": created,
        "creator": creator,
        "citeAs": _cite(manifest),
        "license": [lic.url for lic, _ in lics],  # an empty release names none rather than guess one
        "isAccessibleForFree": True,
        "keywords": ["self-supervised learning", "images", "creative commons", "no people", "webdataset", "passkit"],
        "distribution": _distribution(shards, files),
        "recordSet": [_samples(columns), _images(), _licence_records(lics)],
        "prov:wasGeneratedBy": {
            "@type": "prov:Activity",
            "prov:label": f"passkit {manifest.get('passkit_version', '')} build of {manifest['release']}".replace("  ", " "),
            "prov:endedAtTime": created,
        },
        **rai(manifest),
    }
    return doc


def _cite(manifest: dict[str, Any]) -> str:
    """A BibTeX entry for the release (Croissant recommends citeAs); its words are the manifest's."""
    release = manifest["release"]
    title = (f"{manifest['name']} {manifest['version']}: a people-free image dataset with per-image "
             "licences and attribution").replace("{", "(").replace("}", ")")
    return (f"@misc{{{release}, title = {{{title}}}, year = {{{manifest['created'][:4]}}}, "
            f"version = {{{manifest['version']}}}, note = {{Built with passkit; credits in attribution.csv}}}}")


def _licences(index: IndexSummary) -> list[tuple[licenses.License, int]]:
    out = []
    for lid, n in sorted(index.license_ids.items(), key=lambda kv: str(kv[0])):
        try:
            out.append((licenses.by_id(str(lid)), int(n)))
        except licenses.LicenseError:
            continue  # an id outside the registry has no URL to name; the audit reports such samples
    return out


def _distribution(shards: list[dict[str, Any]], files: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s in shards:
        out.append(_file_object(str(s["path"]), "application/x-tar", s.get("sha256"), s.get("bytes"),
                                f"WebDataset shard: {s.get('samples', '?')} samples as <key>.jpg + <key>.json."))
    kinds = {"index.parquet": ("application/x-parquet", "One row per sample: key, shard, hashes, sizes, full attribution, licence."),
             "rejected.parquet": ("application/x-parquet", "One row per rejected candidate: stage, reason, detail."),
             "attribution.csv": ("text/csv", "The credit line of every sample, for tools.")}
    for name, entry in sorted(files.items()):
        fmt, what = kinds[name]
        out.append(_file_object(name, fmt, entry["sha256"], entry["bytes"], what))
    out.append({
        "@type": "cr:FileSet",
        "@id": "images",
        "name": "images",
        "description": "The released JPEGs inside the shards (each with its <key>.json beside it).",
        "containedIn": [{"@id": str(s["path"])} for s in shards],
        "encodingFormat": "image/jpeg",
        "includes": "*.jpg",
    })
    return out


def _file_object(rel: str, fmt: str, sha256: Any, size: Any, description: str) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "@type": "cr:FileObject",
        "@id": rel,
        "name": rel.rsplit("/", 1)[-1],
        "description": description,
        "contentUrl": rel,
        "encodingFormat": fmt,
    }
    if sha256:
        obj["sha256"] = sha256
    if isinstance(size, int):
        obj["contentSize"] = f"{size} B"
    return obj


def _samples(columns: set[str] | None) -> dict[str, Any]:
    fields = []
    for column, name, dtype, prop, what in SAMPLE_FIELDS:
        if columns is not None and column not in columns:
            continue
        f: dict[str, Any] = {
            "@type": "cr:Field",
            "@id": f"samples/{name}",
            "name": name,
            "description": what,
            "dataType": dtype,
            "source": {"fileObject": {"@id": "index.parquet"}, "extract": {"column": column}},
        }
        if prop:
            f["equivalentProperty"] = prop
        if name == "license_url":
            f["references"] = {"field": {"@id": "licenses/url"}}
        fields.append(f)
    return {
        "@type": "cr:RecordSet",
        "@id": "samples",
        "name": "samples",
        "description": "One record per released image (index.parquet): where it is, and its licence and attribution.",
        "dataType": "sc:ImageObject",
        "key": {"@id": "samples/key"},
        "field": fields,
    }


def _images() -> dict[str, Any]:
    source = {"fileSet": {"@id": "images"}}
    return {
        "@type": "cr:RecordSet",
        "@id": "image_files",
        "name": "image_files",
        "description": "The JPEGs in the shards, by key; samples/key names the same key.",
        "key": {"@id": "image_files/key"},
        "field": [
            {"@type": "cr:Field", "@id": "image_files/key", "name": "key", "dataType": "sc:Text",
             "description": "The sample key: the member name without .jpg.",
             "source": {**source, "extract": {"fileProperty": "filename"}, "transform": {"regex": "^(.*)\\.jpg$"}}},
            {"@type": "cr:Field", "@id": "image_files/image", "name": "image", "dataType": "sc:ImageObject",
             "description": "The image.", "source": {**source, "extract": {"fileProperty": "content"}}},
        ],
    }


def _licence_records(lics: list[tuple[licenses.License, int]]) -> dict[str, Any]:
    return {
        "@type": "cr:RecordSet",
        "@id": "licenses",
        "name": "licenses",
        "description": "The licences of the release's images, with their SPDX ids and how many images each covers.",
        "dataType": "sc:Enumeration",
        "key": {"@id": "licenses/url"},
        "field": [
            {"@type": "cr:Field", "@id": "licenses/url", "name": "url", "dataType": "sc:URL",
             "description": "The licence's deed (a jurisdiction port's own)."},
            {"@type": "cr:Field", "@id": "licenses/name", "name": "name", "dataType": "sc:Text",
             "description": "The licence's name."},
            {"@type": "cr:Field", "@id": "licenses/spdx", "name": "spdx", "dataType": "sc:Text",
             "equivalentProperty": "sc:identifier", "description": "The licence's SPDX id."},
            {"@type": "cr:Field", "@id": "licenses/images", "name": "images", "dataType": "sc:Integer",
             "description": "Images in the release under this licence."},
        ],
        "data": [{"licenses/url": lic.url, "licenses/name": lic.name, "licenses/spdx": lic.spdx, "licenses/images": n}
                 for lic, n in lics],
    }


# ----------------------------------------------------------------------------- Responsible AI


def rai(manifest: dict[str, Any]) -> dict[str, Any]:
    """The Croissant RAI properties, from the manifest's facts: what it records, and nothing it does not."""
    counts = manifest.get("counts") or {}
    by_stage = counts.get("by_stage") or {}
    by_reason = counts.get("by_reason") or {}
    src = manifest.get("source") or {}
    kind = str(src.get("kind") or "unknown")
    policy = manifest.get("policy") or {}
    dets = [d for d in manifest.get("detectors") or [] if isinstance(d, dict)]
    review = manifest.get("review") or {}
    cur = manifest.get("curation") or {}
    image = manifest.get("image") or {}
    removals = manifest.get("removals") or []
    candidates, kept = int(counts.get("candidates", 0)), int(counts.get("kept", 0))
    detectors = ", ".join(f"{d['name']} (threshold {d.get('threshold')}, weights {d.get('weights')})" for d in dets)
    people = int(by_stage.get("people", 0))
    spot_checked, spot_found = int(review.get("spot_checked", 0)), int(review.get("spot_found_person", 0))
    where = src.get("url") or src.get("description")
    return {
        "rai:dataCollection": (
            f"Candidates came from the `{kind}` source{f' ({where})' if where else ''}: {candidates} in all. Each "
            f"candidate's licence was normalised and checked against the policy `{policy.get('name', '?')}` "
            f"(families {', '.join(policy.get('families') or []) or 'as listed'}) with complete attribution (title, "
            "author, source, licence) before any download; allowed images were fetched politely (robots.txt, "
            "opt-out headers such as noai, per-host limits), decoded safely and re-encoded."),
        "rai:dataCollectionType": COLLECTION_TYPE.get(kind, ["Others"]),
        "rai:dataCollectionMissingData": (
            f"{candidates - kept} of {candidates} candidates are not in the release; rejected.parquet lists every "
            "one with its stage and reason (" + _reasons(by_reason) + ")."),
        "rai:dataCollectionRawData": (
            "The source images are not redistributed: each sample keeps the URL of the image it was derived from "
            "(source_url) and the work's page (landing_url)."),
        "rai:dataPreprocessingProtocol": [
            "Licence gate before download: only licences the policy admits, with complete attribution.",
            f"Images: {image.get('modification') or 'resized, re-encoded as JPEG, metadata removed'}.",
            "People filter: " + (f"an image is removed when any of {detectors} fires" if dets else "no detector ran")
            + f" ({people} candidates removed).",
            "Release-wide rules: " + _curation(cur) + ".",
        ],
        "rai:dataManipulationProtocol": (
            f"Every image was modified: {image.get('modification') or 'resized and re-encoded'}; the note is in "
            "each sample's `modification` field, as the licences ask."),
        "rai:dataAnnotationProtocol": (
            "No labels are added. The people detectors' scores are kept per sample (scores in index.parquet and "
            "<key>.json); images scored inside a detector's review band are held back until a human decides "
            "(passkit review), and kept images can be spot-checked by humans."),
        "rai:machineAnnotationTools": [f"{d['name']} (weights {d.get('weights')}"
                                       + (f", sha256 {d['sha256']})" if d.get("sha256") else ")") for d in dets],
        "rai:dataAnnotationAnalysis": people_measured_text(manifest.get("people_measurement") or {}) + " " + (
            "Human review of the people filter (the manifest's review counts): "
            + ", ".join(f"{k} {review[k]}" for k in sorted(review)) + "." if review else
            "No human review of the people filter was recorded for this release."),
        "rai:personalSensitiveInformation": (
            f"No image in which a detector found a person or a face was kept ({people} removed), but detectors "
            "miss some people (see the limitations). Image metadata (EXIF, GPS, XMP, ICC) is removed. The "
            "release does keep personal data the licences require: each creator's name and page as their "
            "source credits them, in the attribution fields and files."),
        "rai:dataLimitations": _limitations(dets, spot_checked, spot_found,
                                            (manifest.get("people_measurement") or {}).get("status") == "measured"),
        "rai:dataBiases": (
            f"Only openly licensed images from the `{kind}` source, under the policy `{policy.get('name', '?')}`: "
            "what that source's photographers chose to share and license, without people. "
            + (f"At most {cur['max_per_creator']} images per creator limit how much one photographer shapes it."
               if cur.get("max_per_creator") else "No per-creator cap was set: prolific photographers weigh more.")),
        "rai:dataUseCases": [
            "Self-supervised pretraining of vision models without images of people (as PASS).",
            "Not for tasks about people, nor for recognising individuals: the release is built to hold none.",
        ],
        "rai:dataReleaseMaintenancePlan": (
            "Creators can ask for a credit to be corrected or a work removed. The maintainers run `passkit "
            "takedown`, which publishes a new version whose manifest lists the removed keys; `passkit audit` "
            f"proves them absent. {len(removals)} sample(s) removed so far."
            + (f" Contact: {(manifest.get('spec') or {}).get('fetch', {}).get('contact')}."
               if (manifest.get("spec") or {}).get("fetch", {}).get("contact") else "")),
    }


def _reasons(by_reason: dict[str, Any]) -> str:
    top = sorted(by_reason.items(), key=lambda kv: (-int(kv[1]), kv[0]))
    return ", ".join(f"{r} {n}" for r, n in top) or "none"


def _curation(cur: dict[str, Any]) -> str:
    parts = [
        f"near-duplicates within Hamming distance {cur['near_dup_hamming']} of a 64-bit pHash removed"
        if cur.get("near_dup_hamming") is not None else "exact duplicates removed",
        f"blank and single-colour images removed (at least {cur['blank_fraction']:.0%} flat pixels)"
        if cur.get("blank_fraction") else "",
        f"decontaminated against {', '.join(cur['exclude_near'].get('sets') or [])}" if cur.get("exclude_near") else "",
        f"at most {cur['max_per_creator']} images per creator" if cur.get("max_per_creator") else "",
    ]
    return "; ".join(p for p in parts if p)


def people_measured_text(m: dict[str, Any]) -> str:
    """The people filter's measured recall, as the manifest records it (matched to the ensemble that ran)."""
    if m.get("status") == "off":
        return "No people detector ran for this release."
    if m.get("status") != "measured":
        return ("The people filter's ensemble has no recorded measurement (its detectors, weights or "
                "thresholds differ from every measured one): its recall is unknown.")
    cv, small = m.get("cv") or {}, (m.get("by_size") or {}).get("<10%")
    return (f"People filter measured on {m.get('dataset')}, thresholds chosen for a false-rejection budget of "
            f"{m.get('frr_budget'):.0%} and cross-validated ({cv.get('folds')} folds): {cv.get('recall'):.1%} of "
            f"photos with a person rejected outright, {cv.get('recall_with_review'):.1%} counting the human "
            f"review queue, {cv.get('frr'):.1%} of photos without people rejected"
            + (f"; people under 10 % of the photo's height: {small:.0%} rejected outright" if small is not None
               else "") + f" (reproduce: {m.get('command')}).")


def _limitations(dets: list[dict[str, Any]], spot_checked: int, spot_found: int, measured: bool) -> str:
    text = ("The people filter is automatic and misses some people (small, occluded or turned away): "
            + ("its recall was measured on a labelled set (see the annotation analysis), not on this release's "
               "own images" if measured else "its recall was not measured")
            + ", and no filter reaches 100 %. ")
    if spot_checked:
        text += (f"Humans spot-checked {spot_checked} kept image(s) and found a person in {spot_found} "
                 f"({spot_found / spot_checked:.1%}); those were removed. ")
    else:
        text += "No kept image was spot-checked by a human. "
    if not dets:
        text += "No people detector ran for this release. "
    return text + ("Attribution is as the sources published it; licences were not verified with the creators. "
                   "Images are resized, so they suit pretraining more than tasks needing full resolution.")
