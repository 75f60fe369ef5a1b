"""Pipeline spec: YAML in, validated models out, errors that name the field and what is allowed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from passkit import licenses


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- sources


class DemoSourceSpec(_Model):
    """The embedded catalog: sample photos from installed packages, served on 127.0.0.1."""

    kind: Literal["demo"] = "demo"
    queries: list[str] = Field(default_factory=lambda: ["*"])
    page_size: int = Field(20, ge=1, le=500)
    port: int | None = Field(
        None, ge=0, le=65535,
        description="catalog port; None: $PASSKIT_DEMO_PORT or 28731, 0: any free port. Image URLs carry "
        "the port, so a fixed one lets a rerun resume and rebuild byte-identical shards",
    )


SourceSpec = Annotated[DemoSourceSpec, Field(discriminator="kind")]


# ----------------------------------------------------------------------------- stages


class LicenseSpec(_Model):
    policy: Literal["cc-by", "by-or-public-domain"] = "cc-by"
    allow: list[str] = Field(default_factory=list, description="extra registry ids, e.g. cc-by-sa-4.0")
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

    def build(self) -> licenses.Policy:
        return licenses.policy(self.policy, self.allow, self.deny)


class FetchSpec(_Model):
    threads: int = Field(16, ge=1, le=512)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(20.0, gt=0)
    total_timeout: float = Field(60.0, gt=0, description="wall-clock limit for one download, slow drips included")
    max_bytes: int = Field(25_000_000, ge=1024)
    retries: int = Field(2, ge=0, le=10)
    backoff: float = Field(0.5, ge=0, description="first retry delay in seconds; doubles each try")
    user_agent: str = "passkit/0.1 (+https://github.com/passkit/passkit; dataset builder)"
    optout_headers: list[str] = Field(
        default_factory=lambda: ["noai", "noimageai"],
        description="X-Robots-Tag directives that opt a page out of AI training",
    )


class ImageSpec(_Model):
    min_side: int = Field(64, ge=1)
    max_side: int = Field(512, ge=16, description="longer side after resize")
    max_pixels: int = Field(89_478_485, ge=1, description="decompression-bomb limit")
    jpeg_quality: int = Field(90, ge=1, le=100)


DetectorName = Literal["mtcnn", "hog", "yolox_nano", "yunet", "yolo_fastest_body"]


class DetectorSpec(_Model):
    name: DetectorName
    threshold: float = Field(..., ge=0, le=1)
    required: bool = Field(
        True, description="false: skipped with a note when its weights are not found under PASSKIT_MODELS"
    )


class PeopleSpec(_Model):
    enabled: bool = True
    device: Literal["cpu", "cuda"] = "cpu"
    detectors: list[DetectorSpec] = Field(
        default_factory=lambda: [
            DetectorSpec(name="mtcnn", threshold=0.90),
            DetectorSpec(name="hog", threshold=0.50),
            DetectorSpec(name="yolox_nano", threshold=0.55, required=False),
        ]
    )


class WorkSpec(_Model):
    dir: str = "work/{name}"
    unit_size: int = Field(256, ge=1)
    workers: int = Field(2, ge=1, le=256)


class ReleaseSpec(_Model):
    dir: str = "releases"
    shard_max_samples: int = Field(1000, ge=1)


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


class SpecError(ValueError):
    """A spec that does not validate; the message lists each bad field with what is allowed."""


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Walk the model along `loc` to list the fields allowed at the parent of a bad key."""
    cur: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields:
            return None
        if part not in fields:
            # discriminated union tag (e.g. "demo") — pick that member
            args = getattr(cur, "__args__", ())
            cur = next((a for a in args if getattr(a, "model_fields", {}).get("kind")), cur)
            continue
        ann = fields[part].annotation
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


def format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: the pipeline spec is not valid:"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p in ("demo",)))
        path = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = _allowed_fields(PipelineSpec, loc)
            msg = "unknown field" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
        elif e["type"] == "missing":
            msg = "required field is missing"
        got = e.get("input")
        if e["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict):
            msg += f" (got {got!r})"
        lines.append(f"  - {path}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, origin: str = "<spec>") -> PipelineSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: a pipeline spec is a YAML mapping, got {type(data).__name__}")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_errors(e, origin)) from None


def load_spec(path: str | Path) -> PipelineSpec:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: no such spec file (try pipelines/demo.yaml)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML: {e}") from None
    return parse_spec(data, str(p))
