"""The dataset card (README.md, Hugging Face YAML header + datasheet sections) and LICENSES.md.

The card follows "Datasheets for Datasets" (Gebru et al.): motivation, composition, collection,
filtering with the release's real numbers, attribution and removal requests. The YAML header is
what the Hugging Face Hub reads (license with the Hub's ids, size category, tasks, data files).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from passkit import licenses
from passkit.release.attribution import csv_note
from passkit.release.escape import markdown_text
from passkit.release.report import funnel

if TYPE_CHECKING:
    from passkit.release.documents import IndexSummary, RejectedSummary

SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))


def size_category(n: int) -> str:
    return next((label for limit, label in SIZE_CATEGORIES if n < limit), "n>1B")


def _license_header(ids: list[str]) -> dict[str, Any]:
    """The card's licence keys: the Hub's ids (a list when several); `other` for licences the Hub has
    no id for, with license_name (the SPDX id, lower case) and license_link (the licence's own URL),
    or LICENSES.md when several such licences are in the release."""
    known = [lic for i in ids if (lic := _registry(i)) is not None]
    others = sorted({lic.spdx: lic for lic in known if lic.hub_id is None}.items())
    hub = sorted({lic.hub_id for lic in known if lic.hub_id})
    if others or len(known) < len(ids) or not hub:  # "other" sorts after every cc id
        hub.append("other")
    out: dict[str, Any] = {"license": hub[0] if len(hub) == 1 else hub}
    if "other" in hub:
        if len(others) == 1 and len(known) == len(ids):
            spdx, lic = others[0]
            out["license_name"] = spdx.lower()
            out["license_link"] = lic.url
        else:
            out["license_name"] = "mixed-cc"
            out["license_link"] = "LICENSES.md"
    return out


def _registry(license_id: str) -> licenses.License | None:
    try:
        return licenses.by_id(license_id)
    except licenses.LicenseError:
        return None


class _Markdown(str):
    """Text already escaped for Markdown: a table cell takes it as it is."""


def _text(value: Any) -> _Markdown:
    """A stranger's text (provider, licence name, removal reason) for a table cell: escaped, so it
    shows as written and never becomes a link, an image, HTML or a cell boundary."""
    return _Markdown(markdown_text(value))


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        # The other cells are passkit's own words (stages, reasons, counts, licence ids): only | is escaped
        return v if isinstance(v, _Markdown) else str(v).replace("|", "\\|")

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]]


def write_licenses(path: Path, manifest: dict[str, Any], index: IndexSummary) -> None:
    ids = index.license_ids
    lines = [
        f"# Licences — {manifest['release']}",
        "",
        "The images in this release are not covered by one licence: each is used under the licence its",
        "creator chose, recorded in its `<key>.json`, in index.parquet and in the attribution files.",
        f"The release was built under the licence policy `{manifest['policy']['name']}`, which allows the",
        f"families {', '.join(manifest['policy'].get('families') or []) or 'listed below'}.",
        "",
    ]
    rows = []
    for lid, n in sorted(ids.items()):
        lic = licenses.by_id(lid)
        duties = []
        if lic.public_domain:
            duties.append("no conditions (credit kept as a courtesy)")
        else:
            duties.append("credit the creator, link the licence, note modifications")
            if lic.needs_title:
                duties.append("name the title")
        if lic.share_alike:
            duties.append("share adaptations alike")
        if lic.non_commercial:
            duties.append("non-commercial use only")
        if lic.no_derivatives:
            duties.append("no derivatives")
        text = "deed" if lic.id.startswith("pdm") else "legal code"
        rows.append([lic.name, f"`{lid}`", f"`{lic.spdx}`", n, f"[{text}]({lic.url})", "; ".join(duties)])
    lines += _table(["licence", "id", "SPDX id", "images", "text", "what reuse requires"], rows)
    mod = index.modification if index.rows else manifest.get("image", {}).get("modification", "")
    lines += [
        "",
        "## Modifications",
        "",
        f"Every image was modified: {mod}. The note is in each sample's `modification` field.",
        "",
        "## Keeping attribution with every copy",
        "",
        "Redistributing this release, or any part of it, means keeping each image's credit line with it:",
        "the shards' `<key>.json` files, ATTRIBUTION.md, attribution.csv and attribution.html carry it.",
        "",
        "## The release's own files",
        "",
        "The manifest, index, attribution files, this file, the dataset card and the report are metadata",
        "about the works; they contain the works' titles and creators' names as the sources published them.",
    ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_card(path: Path, manifest: dict[str, Any], index: IndexSummary, rejected: RejectedSummary) -> None:
    counts = manifest["counts"]
    n = int(counts["kept"])
    ids = sorted(index.license_ids)
    header: dict[str, Any] = {
        "pretty_name": manifest["release"],
        **_license_header(ids),
        "size_categories": [size_category(n)],
        "task_categories": ["image-feature-extraction", "image-classification"],
        "tags": ["self-supervised-learning", "webdataset", "creative-commons", "no-people", "passkit"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "shards/*.tar"}]}],
    }
    lic = index.license_labels
    prov = index.providers
    creators = index.creators
    size = sum(int(s["bytes"]) for s in manifest.get("shards") or [])
    dets = manifest.get("detectors") or []
    cur = manifest.get("curation") or {}
    reasons = rejected.reasons
    removals = manifest.get("removals") or []
    src = manifest.get("source") or {}
    L: list[str] = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    L += [
        f"# {manifest['release']}",
        "",
        (manifest.get("description") or "").strip() or "An image dataset built with passkit.",
        "",
        f"{n} images in {len(manifest.get('shards') or [])} WebDataset shards ({size / 1e6:.1f} MB), "
        f"each with its licence and full attribution, none showing a person.",
        "",
        "## Motivation",
        "",
        "Self-supervised pretraining needs many images but not labels. This dataset, like PASS, keeps only",
        "images whose licence allows reuse with attribution and drops every image in which a detector",
        "sees a person, so models can be pretrained without personal data and with every credit honoured.",
        "",
        "## Composition",
        "",
        f"- {n} JPEG images ({manifest.get('image', {}).get('fit', 'longer')} side at most "
        f"{manifest.get('image', {}).get('max_side', '?')} px), "
        f"by {creators} creators.",
        "- Each sample is `<key>.jpg` + `<key>.json` (title, creator, source and landing URLs, provider, licence,",
        "  credit sentence, modification note, sha256 and pHash, sizes, people-detector scores).",
        "- `index.parquet` has one row per sample; `rejected.parquet` one row per rejected candidate.",
        "",
        *_table(["licence", "images"], [[_text(k), v] for k, v in lic.most_common()]),
        "",
        *_table(["provider", "images"], [[_text(k), v] for k, v in prov.most_common()]),
        "",
        "## Collection process",
        "",
        f"Candidates came from the `{src.get('kind', 'unknown')}` source"
        + (f" ({src.get('url') or src.get('description')})" if (src.get("url") or src.get("description")) else "")
        + ". Each was checked against the licence policy and for complete",
        "attribution before any download, fetched politely (robots.txt, opt-out headers such as `noai`,",
        "per-host limits), decoded safely, resized and re-encoded without metadata.",
        "",
        "## Filtering",
        "",
        f"Of {counts['candidates']} candidates, {n} were kept. Each candidate ends in exactly one stage:",
        "",
        *_table(["stage", "rejected", "remaining"], [[f["stage"], f["rejected"], f["remaining"]] for f in funnel(counts)]),
        "",
        *_table(["stage", "reason", "candidates"],
                [[s, r, c] for (s, r), c in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]),
        "",
        "People detectors (an image is rejected when any fires):",
        "",
        *([f"- `{d['name']}` threshold {d['threshold']} ({d.get('weights')})" for d in dets] or ["- none ran"]),
        "",
        _measured_line(manifest.get("people_measurement") or {}),
        "",
        "Release-wide rules: "
        + "; ".join(filter(None, [
            f"near-duplicates within Hamming distance {cur['near_dup_hamming']} of a 64-bit pHash removed"
            if cur.get("near_dup_hamming") is not None else "exact duplicates removed",
            f"blank and single-colour images removed (≥ {cur['blank_fraction']:.0%} flat pixels)"
            if cur.get("blank_fraction") else None,
            f"decontaminated against {', '.join(cur['exclude_near']['sets'])} "
            f"({cur['exclude_near']['hashes']} hashes, distance ≤ {cur['exclude_near']['hamming']})"
            if cur.get("exclude_near") else None,
            f"at most {cur['max_per_creator']} images per creator" if cur.get("max_per_creator") else None,
        ])) + ".",
        "",
        "## Attribution",
        "",
        "Every image keeps its credit line: in its `<key>.json`, in ATTRIBUTION.md, attribution.csv and",
        "attribution.html. LICENSES.md lists the licences and what each asks of a reuser. When you",
        "redistribute images from this dataset, keep their credit lines with them and note the modification.",
        *csv_note(index.formula_cells),
        "",
        "## Removal requests",
        "",
        "Creators can ask for a credit to be corrected or for their work to be removed; the maintainers run",
        "`passkit takedown` and publish a new version whose manifest lists the removed keys, which",
        "`passkit audit` proves absent.",
        "",
    ]
    if removals:
        L += [f"{len(removals)} sample(s) removed so far:", "",
              *_table(["key", "reason"], [[f"`{r['key']}`", _text(r["reason"])] for r in removals]), ""]
    else:
        L += ["No sample has been removed so far.", ""]
    prev = manifest.get("previous")
    if prev:
        L += [f"This version follows {prev['release']}.", ""]
    L += [
        "## Verification",
        "",
        f"`passkit audit {manifest['release']}` checks checksums, schema, policy, attribution, tar safety and",
        "that every image decodes and matches its sha256. report.html shows the funnel, the detector scores",
        "and thumbnails of kept samples.",
    ]
    Path(path).write_text("\n".join(L) + "\n", encoding="utf-8")


def _measured_line(m: dict[str, Any]) -> str:
    """How well the people filter was measured (the manifest's people_measurement), in one paragraph."""
    from passkit.release.croissant import people_measured_text

    return "How well: " + people_measured_text(m)
