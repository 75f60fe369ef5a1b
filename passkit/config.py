"""Pipeline spec: YAML in, validated models out, errors that name the field and what is allowed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from passkit import licenses, models

# The source union (one member per kind) and its kinds come from the source table,
# passkit.sources.SOURCES; each kind's spec class lives beside its source.
from passkit.sources import SOURCE_KINDS, SourceSpec
from passkit.specbase import SpecModel as _Model

# ----------------------------------------------------------------------------- stages


class LicenseSpec(_Model):
    policy: Literal["cc-by", "by-or-public-domain", "custom"] = Field(
        "cc-by", description="cc-by and by-or-public-domain never admit NC, ND or SA; custom admits exactly `allow`"
    )
    allow: list[str] = Field(default_factory=list, description="extra registry ids, e.g. cc0-1.0")
    deny: list[str] = Field(default_factory=list, description="registry ids refused even if allowed")

    @field_validator("allow", "deny")
    @classmethod
    def _known_ids(cls, ids: list[str]) -> list[str]:
        for lid in ids:
            try:
                licenses.by_id(lid)
            except licenses.LicenseError as e:
                raise ValueError(f"{e.detail} (ids look like cc-by-4.0, cc-by-sa-2.0-jp, cc0-1.0, pdm-1.0)") from e
        return ids

    @model_validator(mode="after")
    def _buildable(self) -> LicenseSpec:
        self.build()  # e.g. cc-by with an NC id in allow: refused here, with the fix in the message
        return self

    def build(self) -> licenses.Policy:
        return licenses.policy(self.policy, self.allow, self.deny)


class FetchSpec(_Model):
    threads: int = Field(16, ge=1, le=512)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(20.0, gt=0)
    total_timeout: float = Field(
        60.0, gt=0,
        description="wall-clock limit for one request (connect, TLS, headers, body; each redirect hop), slow drips included",
    )
    max_bytes: int = Field(25_000_000, ge=1024)
    retries: int = Field(2, ge=0, le=10)
    backoff: float = Field(0.5, ge=0, description="first retry delay in seconds; doubles each try")
    user_agent: str = Field(
        "passkit/0.1 (+{contact}; dataset builder)",
        description="sent with every request; {contact} is replaced by `contact`",
    )
    contact: str = Field(
        "https://github.com/passkit/passkit",
        description="a URL (or mailto:) where site owners can reach whoever runs the crawl",
    )
    optout_headers: list[str] = Field(
        default_factory=lambda: ["noai", "noimageai"],
        description="X-Robots-Tag directives that opt a page out of AI training",
    )
    # Politeness. Both limits are for the whole build: each worker process gets its share.
    per_host_connections: int = Field(16, ge=1, le=4096, description="concurrent requests to one host")
    per_host_rate: float = Field(
        25.0, ge=0, description="requests per second to one host (0: unlimited); Crawl-delay can lower it"
    )
    max_retry_wait: float = Field(
        30.0, ge=0, le=600,  # 600: passkit.fetch.limiter.MAX_PAUSE, the longest pause a host can get
        description="longest Retry-After honoured in place; a longer one ends the candidate as transient",
    )
    robots: bool = Field(True, description="fetch, cache and honour each host's robots.txt")
    max_redirects: int = Field(5, ge=0, le=30)
    # SSRF guard: loopback, private, link-local, multicast and reserved addresses are refused.
    allow_private: list[str] = Field(
        default_factory=list,
        description="hosts, IPs or CIDRs exempt from the SSRF guard, e.g. [127.0.0.1, 10.1.0.0/16]",
    )

    @field_validator("allow_private")
    @classmethod
    def _valid_allow(cls, items: list[str]) -> list[str]:
        import ipaddress

        for item in items:
            if "/" in item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError as e:
                    raise ValueError(f"{item!r} is not a CIDR ({e}); write e.g. 10.0.0.0/8") from None
            elif not item or any(c in item for c in " :/@?#") and not _is_ip(item):
                raise ValueError(f"{item!r} is neither a host name, an IP nor a CIDR")
        return items

    @property
    def agent(self) -> str:
        """The User-Agent header: the template with the contact URL filled in."""
        return self.user_agent.replace("{contact}", self.contact)


class ImageSpec(_Model):
    min_side: int = Field(64, ge=1)
    max_side: int = Field(512, ge=16, description="the side `fit` names is at most this after resize")
    fit: Literal["longer", "shorter"] = Field(
        "longer",
        description="longer: the longer side is at most max_side (the default); shorter: the shorter side is, "
        "as torchvision's Resize(int) and img2dataset's keep_ratio do, so random crops of max_side fit. "
        "Never upscales.",
    )
    max_pixels: int = Field(89_478_485, ge=1, description="decompression-bomb limit")
    jpeg_quality: int = Field(90, ge=1, le=100)
    decode_budget_mb: int = Field(
        1024, ge=16,
        description="decode memory one worker process's threads share, in MiB, counted in bytes (mode and "
        "bit depth included), not pixels: an image's estimated peak is reserved before it decodes and "
        "others wait while it is held; formats other than JPEG that would not fit at full size are "
        "reduced right after decoding; an image over the whole budget is rejected (decode_budget). "
        "The default takes JPEG, PNG, GIF and BMP up to max_pixels (one at a time at worst); WebP "
        "(whose decoder keeps three full-size copies) up to about 50 megapixels",
    )

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: Any) -> dict[str, Any]:
        """`fit` and `decode_budget_mb` appear in the canonical spec only when they are not the
        default, so specs (and the unit fingerprints of work folders) from before they existed keep
        their hashes."""
        data = handler(self)
        if data.get("fit") == "longer":
            del data["fit"]
        if data.get("decode_budget_mb") == 1024:
            del data["decode_budget_mb"]
        return data


# every detector in the models registry (a light module: the spec validates without importing the filter)
DetectorName = Literal[tuple(models.REGISTRY)]  # type: ignore[valid-type]
# detectors whose graph runs at any input size (fully convolutional, decode outside the graph)
RESHAPABLE = ("yolox_nano",)


class DetectorSpec(_Model):
    name: DetectorName
    threshold: float = Field(..., ge=0, le=1)
    required: bool = Field(
        True, description="false: skipped with a note when its weights are not found under PASSKIT_MODELS"
    )
    # Review band, tiling, fallbacks, local torchvision weights: each optional, so a spec that sets none
    # of them validates as it did before they existed.
    review: float | None = Field(
        None, ge=0, le=1,
        description="top scores in [review, threshold) send the image to the human review queue instead "
        "of the release; None: no review band for this detector",
    )
    tiles: int = Field(
        1, ge=1, le=4,
        description="n > 1: also run the detector on an n x n grid of overlapping tiles, so small people "
        "fill more of the network's input (about n*n times the cost)",
    )
    tile_threshold: float | None = Field(
        None, ge=0, le=1,
        description="with tiles > 1: the score a detection found in a tile must reach, recorded as "
        "'<name>@tiles'. A tile is upsampled into the network's input, clutter with it, so tiles usually "
        "want a higher threshold than the whole image; None: tile detections are merged with the whole "
        "image's and count against `threshold`",
    )
    tile_review: float | None = Field(
        None, ge=0, le=1, description="with tile_threshold: review band [tile_review, tile_threshold) for tiles"
    )
    fallback_for: list[DetectorName] = Field(
        default_factory=list,
        description="run this detector only when every detector named here was skipped for missing weights "
        "(e.g. hog stands in for the person detectors on a machine without downloads)",
    )
    weights: str | None = Field(
        None, description="torchvision: path of a local weights file (.pth state dict) for `arch`"
    )
    arch: str | None = Field(
        None, description="torchvision: detection model builder, e.g. fasterrcnn_mobilenet_v3_large_fpn"
    )
    sha256: str | None = Field(None, description="torchvision: expected sha256 of `weights` (checked)")
    runtime: Literal["auto", "onnxruntime", "openvino"] = Field(
        "auto",
        description="ONNX detectors: auto takes the runtime measured faster for the detector (OpenVINO on the "
        "CPU where it is installed, pip install passkit[openvino]: same scores) and ONNX Runtime otherwise or on the GPU",
    )
    image_score: Literal["top", "noisy_or"] = Field(
        "top",
        description="how the detector's boxes make its image score: top, the best box's score; noisy_or, "
        "1 - prod(1 - s) over its boxes (up to 5 after NMS), so several weak detections (a group of small, "
        "distant people) add up where each alone stays under the threshold",
    )
    input_size: int | None = Field(
        None, ge=128, le=1280, multiple_of=32,
        description="yolox_nano: the square network input in pixels (default 416, the graph's own); "
        "another size reshapes the graph, which needs OpenVINO",
    )

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: Any) -> dict[str, Any]:
        """`runtime`, `image_score` and `input_size` appear in the canonical spec only when set, so specs
        from before they existed keep their hashes."""
        data = handler(self)
        if data.get("runtime") == "auto":
            del data["runtime"]
        if data.get("image_score") == "top":
            del data["image_score"]
        if data.get("input_size") is None:
            data.pop("input_size", None)
        return data

    @model_validator(mode="after")
    def _review_below_threshold(self) -> DetectorSpec:
        if self.review is not None and self.review >= self.threshold:
            raise ValueError(
                f"detector {self.name}: review ({self.review}) must be below threshold ({self.threshold}); "
                "the review band is [review, threshold)"
            )
        if self.name == "torchvision" and not self.weights:
            raise ValueError("detector torchvision needs `weights: /path/to/file.pth` (and `arch`)")
        if self.input_size is not None and self.name not in RESHAPABLE:
            raise ValueError(
                f"detector {self.name}: input_size is a setting of {', '.join(RESHAPABLE)} only (the other "
                "graphs fix their input size)"
            )
        if self.tile_threshold is not None and self.tiles < 2:
            raise ValueError(f"detector {self.name}: tile_threshold needs tiles >= 2")
        if self.tile_review is not None and (self.tile_threshold is None or self.tile_review >= self.tile_threshold):
            raise ValueError(f"detector {self.name}: tile_review needs a tile_threshold above it")
        return self


def _default_detectors() -> list[DetectorSpec]:
    """Weighted detectors when `passkit models fetch` has run; MTCNN + HOG stand in when it has not.

    Thresholds and review bands chosen with `passkit filter eval` on person_dev_coco, cross-validated
    (see the docstring of passkit.filters.people).
    """
    return [
        *(DetectorSpec(name=name, threshold=t, review=r, image_score=how, required=False)
          for name, (t, r, how) in DEFAULTS_PEOPLE.items()),
        DetectorSpec(name="mtcnn", threshold=0.90, fallback_for=["yunet"]),
        DetectorSpec(name="hog", threshold=0.50, fallback_for=["yolox_nano", "picodet_s_416"]),
    ]


# detector -> (threshold, review floor, image score) of the default ensemble. PicoDet's noisy-OR sits
# near 0.5 on clean photos (it always reports five faint boxes of 0.1-0.2), so its review floor is 0.55.
DEFAULTS_PEOPLE: dict[str, tuple[float, float | None, Literal["top", "noisy_or"]]] = {
    "yolox_nano": (0.50, 0.15, "noisy_or"),
    "picodet_s_416": (0.612, 0.55, "noisy_or"),
    "yunet": (0.90, 0.80, "top"),
}


class PeopleSpec(_Model):
    enabled: bool = True
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu",
        description="cuda: every detector on the GPU, or an error saying what to install; auto: each detector "
        "on the GPU when its runtime (torch, onnxruntime-gpu, a CUDA OpenCV) can, else on the CPU (what "
        "the Ray executor uses on GPU workers)",
    )
    detectors: list[DetectorSpec] = Field(default_factory=_default_detectors)
    concurrent: bool = Field(
        False,
        description="run the detectors of a batch concurrently, one thread each (they release the GIL). "
        "Helps a worker that has cores to spare (one process on a many-core box, GPU + CPU detectors); "
        "off by default because a build already runs one worker per core: on 2 cores, 2 workers scoring "
        "sequentially gave 39.7 img/s against 38.2 concurrently when idle, and 36.5 against 19.9 when "
        "other work shared the cores (oversubscription); see benchmarks/people_filter.py",
    )


class WorkSpec(_Model):
    dir: str = "work/{name}"
    unit_size: int = Field(256, ge=1)
    workers: int = Field(2, ge=1, le=256)
    executor: Literal["local", "ray"] = Field("local", description="local process pool, or Ray (pip install passkit[ray])")
    ray_address: str | None = Field(None, description="Ray cluster address, e.g. ray://head:10001 or auto")
    gpu_per_unit: float = Field(
        0.25, gt=0, le=1, description="with Ray on a cluster that has GPUs: the GPU share one unit's task asks for"
    )


class TakedownSpec(_Model):
    """One removal request applied when the release is built: a key, a creator or a source URL."""

    key: str | None = None
    creator: str | None = Field(None, description="creator name or creator URL (case-insensitive)")
    source_url: str | None = Field(None, description="image URL or landing page URL")
    reason: str = Field(..., min_length=1, description="why, as recorded in the manifest's removals")

    @model_validator(mode="after")
    def _one_selector(self) -> TakedownSpec:
        if not (self.key or self.creator or self.source_url):
            raise ValueError("a takedown names a key, a creator or a source_url")
        return self


class ReleaseSpec(_Model):
    dir: str = "releases"
    shard_max_samples: int = Field(1000, ge=1)
    near_dup_hamming: int | None = Field(
        8, ge=0, le=24,
        description="drop an image whose 64-bit pHash is within this Hamming distance of an earlier kept one "
        "(whole release, source order); None: exact duplicates only. The demo's closest distinct photos are 20 apart",
    )
    exclude_near: list[str] = Field(
        default_factory=list,
        description="evaluation sets to decontaminate against: folders of images or files of hex pHashes "
        "(one per line), e.g. ImageNet val; relative paths are taken from the working directory",
    )
    exclude_near_hamming: int = Field(8, ge=0, le=24, description="Hamming distance that counts as overlap")
    drop_blank: bool = Field(True, description="drop blank and single-colour images")
    blank_fraction: float = Field(
        0.98, gt=0.5, le=1.0, description="share of pixels within ±12 of the median colour that makes an image flat"
    )
    max_per_creator: int | None = Field(
        None, ge=1, description="at most this many samples per creator in the release (source order); None: no cap"
    )
    takedowns: list[TakedownSpec] = Field(default_factory=list, description="removal requests applied at build")

    @field_validator("exclude_near", mode="before")
    @classmethod
    def _one_exclude(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class PipelineSpec(_Model):
    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]*$")
    version: str = Field(..., pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")
    description: str = ""
    source: SourceSpec
    license: LicenseSpec = LicenseSpec()
    fetch: FetchSpec = FetchSpec()
    image: ImageSpec = ImageSpec()
    people: PeopleSpec = PeopleSpec()
    work: WorkSpec = WorkSpec()
    release: ReleaseSpec = ReleaseSpec()

    @model_validator(mode="after")
    def _sizes(self) -> PipelineSpec:
        if self.image.min_side > self.image.max_side:
            raise ValueError(f"image.min_side ({self.image.min_side}) exceeds image.max_side ({self.image.max_side})")
        return self

    @property
    def release_name(self) -> str:
        return f"{self.name}-{self.version}"

    def work_dir(self, base: Path | None = None) -> Path:
        return (base or Path.cwd()) / self.work.dir.format(name=self.name)

    def release_dir(self, base: Path | None = None) -> Path:
        return (base or Path.cwd()) / self.release.dir / self.release_name

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class SpecError(ValueError):
    """A spec that does not validate; the message lists each bad field with what is allowed."""


class InputError(ValueError):
    """An input the build cannot use (a list file, a work or release folder): one line naming the
    problem and its fix, raised before the crawl where it can be checked then."""


def field_error(model: type[BaseModel], name: str, value: Any) -> str | None:
    """Why `value` does not fit `model`'s field `name`, or None. A command-line flag that overrides a
    spec field is checked by the field's own type and bounds, so the two cannot disagree."""
    from typing import Annotated

    from pydantic import TypeAdapter

    info = model.model_fields[name]
    try:
        TypeAdapter(Annotated[(info.annotation, *info.metadata)]).validate_python(value)
    except ValidationError as e:
        return str(e.errors()[0]["msg"])
    return None


def field_bounds(model: type[BaseModel], name: str) -> tuple[Any, Any]:
    """(lowest, highest) a numeric field allows, from its ge/le constraints (None where unbounded)."""
    lo = hi = None
    for m in model.model_fields[name].metadata:
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
    return lo, hi


def check_field(model: type[BaseModel], name: str, value: Any, label: str) -> None:
    """InputError (`label` names where the value came from, e.g. --workers) unless `value` fits the field."""
    why = field_error(model, name, value)
    if why is not None:
        lo, hi = field_bounds(model, name)
        allowed = f"; use {lo} to {hi}, as the spec's field allows" if lo is not None and hi is not None else ""
        raise InputError(f"{label} {short_repr(value)}: {why}{allowed}")


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Walk the model along `loc` to list the fields allowed at the parent of a bad key."""
    cur: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        members = _tagged_members(cur)
        if members:  # a discriminated union: the next loc part is the member's tag (e.g. "openverse")
            cur = members.get(part, cur)
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return None
        ann = fields[part].annotation
        if _tagged_members(ann):
            cur = ann
            continue
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                cur = cand
                break
            for inner in getattr(cand, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    cur = inner
                    break
    fields = getattr(cur, "model_fields", None)
    return sorted(fields) if fields else None


def _tagged_members(tp: Any) -> dict[str, type[BaseModel]]:
    """kind -> model for a union of models tagged by `kind` (the source union); {} for anything else."""
    out: dict[str, type[BaseModel]] = {}
    for a in get_args(tp):
        if isinstance(a, type) and issubclass(a, BaseModel) and "kind" in a.model_fields:
            out[str(a.model_fields["kind"].default)] = a
    return out


def _strip_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the union tag pydantic puts after `source` (source.openverse.queries -> source.queries)."""
    return tuple(
        p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "source" and p in SOURCE_KINDS)
    )


# Longest value or message quoted in a spec error: a hostile or mistaken spec can hold megabytes in one
# field, and the error is read by a person on a terminal.
MAX_QUOTED = 200


def cut(text: str, limit: int = MAX_QUOTED) -> str:
    """`text`, or its first `limit` characters and how many there were."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def short_repr(value: Any, limit: int = MAX_QUOTED) -> str:
    """repr() that looks at a bounded part of `value`: a nested value is never rendered whole."""
    import reprlib

    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset, r.maxfrozenset = 3, 6, 6, 6, 6, 6
    r.maxstring = r.maxother = r.maxlong = limit
    return cut(r.repr(value), limit)


def format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: the pipeline spec is not valid:"]
    for e in err.errors():
        raw = tuple(e["loc"])
        loc = _strip_tags(raw)
        path = cut(".".join(str(p) for p in loc) or "(top level)")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = _allowed_fields(PipelineSpec, raw)
            msg = "unknown field" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
        elif e["type"] == "missing":
            msg = "required field is missing"
        else:
            msg = cut(msg, 4 * MAX_QUOTED)  # a validator's message may quote the value itself
        got = e.get("input")
        if e["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict):
            msg += f" (got {short_repr(got)})"
        lines.append(f"  - {path}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, origin: str = "<spec>") -> PipelineSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: a pipeline spec is a YAML mapping, got {type(data).__name__}")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_errors(e, origin)) from None


# How many nodes aliases may add to a spec when expanded. Anchors and aliases are handy for sharing a
# detector list; but a few nested aliases in a few hundred bytes can also stand for billions of nodes
# (the "billion laughs"), which validation and its error messages would then walk.
MAX_ALIAS_NODES = 10_000


class _AliasBomb(ValueError):
    pass


class _SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a document whose aliases add more than MAX_ALIAS_NODES nodes."""

    def compose_document(self) -> Any:
        node = super().compose_document()
        _expanded_size(node, _distinct_nodes(node) + MAX_ALIAS_NODES)
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _distinct_nodes(root: yaml.Node) -> int:
    """Nodes as written (an alias's target counted once)."""
    seen = {id(root)}
    todo = [root]
    while todo:
        for c in _children(todo.pop()):
            if id(c) not in seen:
                seen.add(id(c))
                todo.append(c)
    return len(seen)


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes under `root` with every alias expanded, refused past `limit`. Iterative (a deep document
    cannot exhaust the stack) and linear in the distinct nodes: each node's size is computed once."""
    size: dict[int, int] = {}  # node -> expanded size, once its children are done
    on_path: set[int] = set()  # meeting one of these again is an alias to its own ancestor
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        k = id(node)
        if children_done:
            on_path.discard(k)
            size[k] = 1 + sum(size[id(c)] for c in _children(node))
            if size[k] > limit:
                raise _AliasBomb(f"its aliases expand to more than {limit} nodes, over {MAX_ALIAS_NODES} more "
                                 "than written; write the values out instead of nesting aliases")
            continue
        if k in size:
            continue
        if k in on_path:
            raise _AliasBomb("an alias refers to a node that contains it (a recursive alias)")
        on_path.add(k)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    return size[id(root)]


def load_yaml(path: Path) -> Any:
    """The YAML document in `path`, aliases bounded; a SpecError names what is wrong and the fix
    (missing, unreadable, not UTF-8, not YAML, nested too deeply, aliases that expand too far)."""
    if path.is_dir():
        raise SpecError(f"{path}: is a folder; name the spec file in it (e.g. pipelines/demo.yaml)")
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file (try pipelines/demo.yaml)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                        "save the spec as UTF-8") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    try:
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {cut(str(e), 4 * MAX_QUOTED)}") from None
    except _AliasBomb as e:
        raise SpecError(f"{path}: refused: {e}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to be a pipeline spec") from None


def load_spec(path: str | Path) -> PipelineSpec:
    p = Path(path)
    return parse_spec(load_yaml(p), str(p))
