"""One sample: its members, key, order, removals, index row, json and JPEG (decoded in full).

These run in the process that checks the shard (a worker), over its `ShardScan`."""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from typing import TYPE_CHECKING, Any

from passkit.audit.attribution import check_attribution
from passkit.audit.context import INDEX
from passkit.audit.index import INDEX_COMPARED

if TYPE_CHECKING:
    from passkit.audit.shards import ShardScan

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
METADATA_BLOCKS = ("exif", "xmp", "icc_profile", "comment", "photoshop")


def check_sample(sc: ShardScan, key: str, group: dict[str, bytes]) -> bool:
    """Check one sample; True when its bytes disagree with its json or the index.

    Whether its key is also in another shard, and the order across a shard boundary, are the
    merging process's to judge (shards.merge_shard): this runs without the other shards.
    """
    add = sc.add
    changed = False
    if sc.prev_key is not None and key <= sc.prev_key:
        add("sample_order", f"key {key} comes after {sc.prev_key}; samples must be sorted by key", key)
    sc.prev_key = key
    if key in sc.shared.removed:
        add("removed_present", f"removed ({sc.shared.removed[key] or 'no reason given'}) but still in {sc.rel}", key)

    extra = sorted(set(group) - {"jpg", "json"})
    if extra:
        add("sample_extra_member", f"unexpected member(s) {[f'{key}.{x}' for x in extra]}", key)
    missing = [x for x in ("jpg", "json") if x not in group]
    if missing:
        add("sample_incomplete", f"missing {', '.join(f'{key}.{x}' for x in missing)}", key)

    # the index row: from this shard's slice, or (not there) looked up by the merging process
    row = sc.rows.get(key) if sc.rows is not None else None
    elsewhere = sc.rows is not None and row is None
    if elsewhere:
        sc.defer("row", key)

    jpg = group.get("jpg")
    digest = hashlib.sha256(jpg).hexdigest() if jpg is not None else None
    removed_sha = sc.shared.removed_sha
    if digest is not None and digest in removed_sha and removed_sha[digest] != key:
        gone = removed_sha[digest]
        add("removed_present",
            f"its image is removed sample {gone} ({sc.shared.removed[gone] or 'no reason given'}) under a new key", key)
    if digest is not None and row is not None and row.get("sha256") != digest:
        add("index_sha256", f".jpg sha256 {digest} but {INDEX} says {row.get('sha256')}", key)
        changed = True
    elif digest is not None and elsewhere:
        sc.defer("sha", key, digest)

    meta: dict[str, Any] | None = None
    if "json" in group:
        try:
            parsed = json.loads(group["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            add("json_invalid", f"{key}.json does not parse: {e}", key)
            changed = True
        else:
            if isinstance(parsed, dict):
                meta = parsed
            else:
                add("json_invalid", f"{key}.json is a JSON {type(parsed).__name__}, not an object", key)
                changed = True
    if meta is None:
        return changed

    if meta.get("key") != key:
        add("key_mismatch", f"json key {meta.get('key')!r} differs from member key", key)
        changed = True
    if digest is not None:
        if meta.get("sha256") != digest:
            add("image_sha256", f".jpg sha256 {digest} but its json says {meta.get('sha256')}", key)
            changed = True
        assert jpg is not None
        check_image(sc, key, jpg, meta)
    check_attribution(sc, key, meta)
    if row is not None:
        diff = [c for c in INDEX_COMPARED if c in row and row[c] != meta.get(c)]
        if diff:
            add("index_mismatch", f"{INDEX} and json differ in {diff}", key)
            changed = True
    elif elsewhere:
        sc.defer("mismatch", key, {c: meta.get(c) for c in INDEX_COMPARED})
    return changed


def check_image(sc: ShardScan, key: str, data: bytes, meta: dict[str, Any]) -> None:
    """The JPEG: a JPEG at all, baseline, decoding to the last pixel, the size its json says, no
    metadata block. passkit writes baseline JPEGs only: GPU decoders (nvJPEG's hardware path) take
    baseline, and a progressive one falls back to a slow path, so one here was not written by passkit."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            im = Image.open(io.BytesIO(data))  # header only; no pixel decode
            fmt, size, info = im.format, im.size, dict(im.info)
        except Exception as e:  # PIL raises many types for hostile bytes
            sc.add("image_invalid", f"{key}.jpg is not a readable image: {e}", key)
            return
        if fmt != "JPEG":
            sc.add("image_invalid", f"{key}.jpg is {fmt}, not JPEG", key)
        else:
            if info.get("progressive") or info.get("progression"):
                sc.add("image_progressive", f"{key}.jpg is a progressive JPEG, not baseline", key)
            # Decode every pixel: a JPEG whose header parses can still be truncated or corrupt.
            try:
                im.load()
            except Exception as e:
                sc.add("image_invalid", f"{key}.jpg does not decode: {type(e).__name__}: {e}", key)
            else:
                if sc.rescan is not None:
                    sc.rescan.add(key, im)
    w, h = meta.get("width"), meta.get("height")
    if (w, h) != size:
        sc.add("image_size", f"JPEG is {size[0]}x{size[1]}, its json says {w}x{h}", key)
    blocks = [b for b in METADATA_BLOCKS if info.get(b)]
    if blocks:
        sc.add("image_metadata", f"JPEG carries metadata: {', '.join(blocks)}", key)
