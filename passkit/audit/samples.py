"""One sample: its members, key, order, removals, index row, json and JPEG (decoded in full)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from typing import Any

from passkit.audit.attribution import check_attribution
from passkit.audit.context import INDEX, AuditContext
from passkit.audit.index import INDEX_COMPARED

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
METADATA_BLOCKS = ("exif", "xmp", "icc_profile", "comment", "photoshop")


def check_sample(ctx: AuditContext, rel: str, key: str, group: dict[str, bytes]) -> bool:
    """Check one sample; True when its bytes disagree with its json or the index."""
    add = ctx.add
    changed = False
    if key in ctx.seen:
        add("key_duplicate", f"key {key} also appears in {ctx.seen[key]}", rel, key)
    else:
        ctx.seen[key] = rel
    if ctx.prev_key is not None and key <= ctx.prev_key:
        add(
            "sample_order",
            f"key {key} comes after {ctx.prev_key}; samples must be sorted by key",
            rel,
            key,
        )
    ctx.prev_key = key
    if key in ctx.removed:
        add(
            "removed_present",
            f"removed ({ctx.removed[key] or 'no reason given'}) but still in {rel}",
            rel,
            key,
        )

    extra = sorted(set(group) - {"jpg", "json"})
    if extra:
        add("sample_extra_member", f"unexpected member(s) {[f'{key}.{x}' for x in extra]}", rel, key)
    missing = [x for x in ("jpg", "json") if x not in group]
    if missing:
        add("sample_incomplete", f"missing {', '.join(f'{key}.{x}' for x in missing)}", rel, key)

    row = ctx.index.get(key) if ctx.index is not None else None
    if ctx.index is not None:
        if row is None:
            add("index_missing_key", f"no {INDEX} row for this sample", rel, key)
        elif row.get("shard") != rel:
            add("index_shard", f"{INDEX} places it in {row.get('shard')!r}", rel, key)

    jpg = group.get("jpg")
    digest = hashlib.sha256(jpg).hexdigest() if jpg is not None else None
    if digest is not None and digest in ctx.removed_sha and ctx.removed_sha[digest] != key:
        gone = ctx.removed_sha[digest]
        add(
            "removed_present",
            f"its image is removed sample {gone} ({ctx.removed[gone] or 'no reason given'}) under a new key",
            rel,
            key,
        )
    if digest is not None and row is not None and row.get("sha256") != digest:
        add("index_sha256", f".jpg sha256 {digest} but {INDEX} says {row.get('sha256')}", rel, key)
        changed = True

    meta: dict[str, Any] | None = None
    if "json" in group:
        try:
            parsed = json.loads(group["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            add("json_invalid", f"{key}.json does not parse: {e}", rel, key)
            changed = True
        else:
            if isinstance(parsed, dict):
                meta = parsed
            else:
                add(
                    "json_invalid",
                    f"{key}.json is a JSON {type(parsed).__name__}, not an object",
                    rel,
                    key,
                )
                changed = True
    if meta is None:
        return changed

    if meta.get("key") != key:
        add("key_mismatch", f"json key {meta.get('key')!r} differs from member key", rel, key)
        changed = True
    if digest is not None:
        if meta.get("sha256") != digest:
            add("image_sha256", f".jpg sha256 {digest} but its json says {meta.get('sha256')}", rel, key)
            changed = True
        assert jpg is not None
        check_image(ctx, rel, key, jpg, meta)
    check_attribution(ctx, rel, key, meta)
    if row is not None:
        diff = [c for c in INDEX_COMPARED if c in row and row[c] != meta.get(c)]
        if diff:
            add("index_mismatch", f"{INDEX} and json differ in {diff}", rel, key)
            changed = True
    return changed


def check_image(ctx: AuditContext, rel: str, key: str, data: bytes, meta: dict[str, Any]) -> None:
    """The JPEG: a JPEG at all, decoding to the last pixel, the size its json says, no metadata block."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))  # header only; no pixel decode
            fmt, size, info = im.format, im.size, dict(im.info)
    except Exception as e:  # PIL raises many types for hostile bytes
        ctx.add("image_invalid", f"{key}.jpg is not a readable image: {e}", rel, key)
        return
    if fmt != "JPEG":
        ctx.add("image_invalid", f"{key}.jpg is {fmt}, not JPEG", rel, key)
    else:
        # Decode every pixel: a JPEG whose header parses can still be truncated or corrupt.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                full = Image.open(io.BytesIO(data))
                full.load()
        except Exception as e:
            ctx.add("image_invalid", f"{key}.jpg does not decode: {type(e).__name__}: {e}", rel, key)
        else:
            if ctx.rescanner is not None:
                ctx.rescanner.add(rel, key, full)
    w, h = meta.get("width"), meta.get("height")
    if (w, h) != size:
        ctx.add("image_size", f"JPEG is {size[0]}x{size[1]}, its json says {w}x{h}", rel, key)
    blocks = [b for b in METADATA_BLOCKS if info.get(b)]
    if blocks:
        ctx.add("image_metadata", f"JPEG carries metadata: {', '.join(blocks)}", rel, key)
