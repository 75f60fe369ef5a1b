"""Detector weights: names, files, pinned sha256, licence and public source.

The registry is data: one `Model` per detector that needs files, each file with its path relative to
the models folder, its pinned sha256 and size, and the public URL it is copied from byte for byte.
Nothing here downloads; `find` only looks in the models folder (`PASSKIT_MODELS`, default
`~/.cache/passkit/models`) and checks the bytes. A later `passkit models list|verify|fetch` walks
`REGISTRY` (`Model.files`, `ModelFile.url`) and reuses `verify_file`.

Detectors whose weights ship inside an installed package (MTCNN in facenet-pytorch) or inside OpenCV
(HOG) are listed with `package` set and no files: their identity is the package version.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from passkit import atomic

ENV_VAR = "PASSKIT_MODELS"
DEFAULT_DIR = Path("~/.cache/passkit/models")

Role = Literal["weights", "config", "labels", "license"]
# files a detector cannot run without; labels and licence texts are carried along but not needed to run
NEEDED_ROLES: frozenset[str] = frozenset({"weights", "config"})


class ModelError(RuntimeError):
    """A model that cannot be used: unknown name, missing files, or bytes that do not match the pin."""


class ChecksumError(ModelError):
    """A model file whose sha256 is not the pinned one (corrupt, truncated, or a different file)."""

    def __init__(self, path: Path, expected: str, actual: str):
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"{path}: sha256 mismatch: expected {expected}, got {actual}. The file is corrupt or not the "
            f"pinned release; delete it and run `passkit models fetch`, or point {ENV_VAR} at a good copy."
        )


@dataclass(frozen=True)
class ModelFile:
    path: str  # relative to the models folder, "/"-separated
    sha256: str
    size: int
    url: str  # public, commit-pinned URL of the same bytes
    role: Role = "weights"


@dataclass(frozen=True)
class Model:
    name: str  # the detector name used in pipeline specs
    task: Literal["face", "person"]
    detector: str  # "module:Class" in passkit.filters.people that implements it (imported on first use)
    license: str
    source: str  # human-readable provenance: repository @ commit
    files: tuple[ModelFile, ...] = ()
    package: str | None = None  # weights ship inside this installed distribution instead of files
    pinned_version: str | None = None  # the package version the pipeline was measured with
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def main(self) -> ModelFile | None:
        """The weights file (the one `find` returns)."""
        return next((f for f in self.files if f.role == "weights"), None)

    @property
    def needed(self) -> tuple[ModelFile, ...]:
        return tuple(f for f in self.files if f.role in NEEDED_ROLES)


def _gh(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_YOLOX_REPO, _YOLOX_COMMIT = "Kazuhito00/YOLOX-ONNX-TFLite-Sample", "3d4f1119d0694200671c08069ecb847aa0d8495a"
_YF_REPO, _YF_COMMIT = "dog-qiuqiu/Yolo-Fastest", "96a2900d163196c396e73f3fdab04ca4dd9a2f70"
_YUNET_REPO, _YUNET_COMMIT = "ShiqiYu/libfacedetection.train", "0047ac24afb1a50a0c6105001c89d1b5b805dbf1"
_PICO_REPO, _PICO_COMMIT = "hpc203/picodet-onnxruntime", "dfe4d6cd0a18cd4126ee381e81df8a0b1e6ad97b"
_PADDLE_REPO, _PADDLE_COMMIT = "PaddlePaddle/PaddleDetection", "666f597fd00d3157e84dd9fb2dd3f40bf9918ebc"
_RETINA_REPO, _RETINA_COMMIT = "kgzhwang/Pytorch_Retinaface", "6e724185520256cfa136feb4910203b1f55c5274"

REGISTRY: dict[str, Model] = {
    m.name: m
    for m in (
        Model(
            name="mtcnn",
            task="face",
            detector="mtcnn:MTCNNDetector",
            license="MIT (facenet-pytorch); weights converted from the MTCNN authors' release",
            source="https://github.com/timesler/facenet-pytorch",
            package="facenet-pytorch",
            pinned_version="2.6.0",
            notes="pnet.pt, rnet.pt, onet.pt inside the facenet_pytorch package",
        ),
        Model(
            name="hog",
            task="person",
            detector="hog:HOGDetector",
            license="Apache-2.0 (OpenCV)",
            source="https://github.com/opencv/opencv (HOGDescriptor_getDefaultPeopleDetector, Dalal-Triggs)",
            package="opencv-python-headless",
            notes="linear SVM coefficients compiled into OpenCV",
        ),
        Model(
            name="yolox_nano",
            task="person",
            detector="yolox_nano:YOLOXNanoDetector",
            license="Apache-2.0 (Megvii YOLOX; ONNX export by Kazuhito00, Apache-2.0)",
            source=f"https://github.com/{_YOLOX_REPO} @ {_YOLOX_COMMIT} (model/yolox_nano.onnx), "
            "export of Megvii-BaseDetection/YOLOX release 0.1.1rc0 yolox_nano.pth",
            files=(
                ModelFile(
                    "yolox_nano/yolox_nano.onnx",
                    "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14",
                    3_660_092,
                    _gh(_YOLOX_REPO, _YOLOX_COMMIT, "model/yolox_nano.onnx"),
                ),
                ModelFile(
                    "yolox_nano/coco.names",
                    "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84",
                    625,
                    _gh(_YOLOX_REPO, _YOLOX_COMMIT, "model/coco_classes.txt"),
                    "labels",
                ),
                ModelFile(
                    "yolox_nano/LICENSE-export-repo-Kazuhito00.txt",
                    "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4",
                    11_357,
                    _gh(_YOLOX_REPO, _YOLOX_COMMIT, "LICENSE"),
                    "license",
                ),
                ModelFile(
                    "yolox_nano/LICENSE-YOLOX-Megvii.txt",
                    "0ec3668d3274bcf29e8a29e9576d5a2cd96fc78d3c5bec4387355a796e5d9088",
                    11_371,
                    "https://raw.githubusercontent.com/Megvii-BaseDetection/YOLOX/main/LICENSE",
                    "license",
                ),
            ),
            extra={"input": "1x3x416x416 BGR 0-255, top-left letterbox filled with 114", "coco_map": "25.8"},
        ),
        Model(
            name="yunet",
            task="face",
            detector="yunet:YuNetDetector",
            license="Apache-2.0 (libfacedetection.train); OpenCV Zoo ships the yunet_s bytes under MIT",
            source=f"https://github.com/{_YUNET_REPO} @ {_YUNET_COMMIT} (onnx/yunet_n_640_640.onnx)",
            files=(
                ModelFile(
                    "yunet/yunet_n_640_640.onnx",
                    "25a606a145a5b6d7271ae138fbd00eba91dad8b83222ae3f2c7ecd0f4a7b0e31",
                    317_466,
                    _gh(_YUNET_REPO, _YUNET_COMMIT, "onnx/yunet_n_640_640.onnx"),
                ),
                ModelFile(
                    "yunet/LICENSE-libfacedetection.train.txt",
                    "d096f0e4f790316e1df89675682a51c68ca64745a611689ccd37bd246835440e",
                    11_494,
                    _gh(_YUNET_REPO, _YUNET_COMMIT, "LICENSE"),
                    "license",
                ),
            ),
            extra={"input": "cv2.FaceDetectorYN at native size, BGR"},
        ),
        Model(
            name="picodet_s_416",
            task="person",
            detector="picodet:PicoDetDetector",
            license="Apache-2.0 (PaddleDetection); provenance not byte-verified: the export repository has no "
            "LICENSE and PaddleDetection publishes no checksum, so the file is taken to be PaddleDetection's "
            "Apache-2.0 release picodet_s_416_coco.onnx",
            source=f"https://github.com/{_PICO_REPO} @ {_PICO_COMMIT} (coco/picodet_s_416_coco.onnx), "
            "Paddle2ONNX export of PaddleDetection's PP-PicoDet-S 416 (legacy, 2021.10)",
            files=(
                ModelFile(
                    "picodet_s_416_coco/picodet_s_416_coco.onnx",
                    "cdab77bdde16e4f76bec734c4e5791801d1739e4c7ec1995e0e110e04300d0c2",
                    4_040_573,
                    _gh(_PICO_REPO, _PICO_COMMIT, "coco/picodet_s_416_coco.onnx"),
                ),
                ModelFile(
                    "picodet_s_416_coco/coco.names",
                    "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84",
                    625,
                    _gh(_PICO_REPO, _PICO_COMMIT, "coco/coco.names"),
                    "labels",
                ),
                ModelFile(
                    "picodet_s_416_coco/LICENSE-PaddleDetection.txt",
                    "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4",
                    11_357,
                    _gh(_PADDLE_REPO, _PADDLE_COMMIT, "LICENSE"),
                    "license",
                ),
            ),
            extra={"input": "1x3x416x416 RGB, plain cubic resize, ImageNet mean/std", "coco_map": "30.7"},
        ),
        Model(
            name="retinaface_mnet025",
            task="face",
            detector="retinaface:RetinaFaceDetector",
            license="MIT (biubug6/Pytorch_Retinaface)",
            source=f"https://github.com/{_RETINA_REPO} @ {_RETINA_COMMIT} (FaceDetector.onnx), ONNX export "
            "of the mobilenet0.25_Final.pth release checkpoint of biubug6/Pytorch_Retinaface",
            files=(
                ModelFile(
                    "retinaface_mnet025/FaceDetector.onnx",
                    "e0e19bad8494b3f7a7edb39a90194ff055923e13a3453569a454386f857fe538",
                    1_729_306,
                    _gh(_RETINA_REPO, _RETINA_COMMIT, "FaceDetector.onnx"),
                ),
                ModelFile(
                    "retinaface_mnet025/LICENSE-Pytorch_Retinaface-MIT.txt",
                    "41034e3430e3b7fd63031bcc6f9dd9740fa910328f3168208ca032807f026147",
                    1_057,
                    _gh(_RETINA_REPO, _RETINA_COMMIT, "LICENSE.MIT"),
                    "license",
                ),
            ),
            extra={"input": "1x3x640x640 BGR minus (104, 117, 123), top-left letterbox padded with 0"},
        ),
        Model(
            name="yolo_fastest_body",
            task="person",
            detector="yolo_fastest_body:YoloFastestBodyDetector",
            license="YOLO LICENSE v2 (Darknet, public domain)",
            source=f"https://github.com/{_YF_REPO} @ {_YF_COMMIT} (ModelZoo/yolo-fastest-1.1_body/)",
            files=(
                ModelFile(
                    "yolo_fastest_1.1_body/yolo-fastest-1.1_body.weights",
                    "5bbb6d878f6e2eb3deee39e91dc6f9b39700e99ec83fa94d258670a554949728",
                    1_177_604,
                    _gh(_YF_REPO, _YF_COMMIT, "ModelZoo/yolo-fastest-1.1_body/yolo-fastest-1.1_body.weights"),
                ),
                ModelFile(
                    "yolo_fastest_1.1_body/yolo-fastest-1.1_body.cfg",
                    "045b8e276ebe3924474da8c866b7e709159ea067137b5d66bf9dd560411b2c1a",
                    9_679,
                    _gh(_YF_REPO, _YF_COMMIT, "ModelZoo/yolo-fastest-1.1_body/yolo-fastest-1.1_body.cfg"),
                    "config",
                ),
                ModelFile(
                    "yolo_fastest_1.1_body/body.names",
                    "9e2ec912af5dff2a72300863864fc4da04e81999339d9fac5c7590ba8a3f4e11",
                    5,
                    _gh(_YF_REPO, _YF_COMMIT, "ModelZoo/yolo-fastest-1.1_body/body.names"),
                    "labels",
                ),
                ModelFile(
                    "yolo_fastest_1.1_body/LICENSE-Yolo-Fastest.txt",
                    "2021f0b8d6426fbf9a2f0126f1e8a7d3b1d7027c871b9979fa2543b9557000c4",
                    515,
                    _gh(_YF_REPO, _YF_COMMIT, "LICENSE"),
                    "license",
                ),
            ),
            extra={"input": "320x320 RGB 0-1 plain resize (cv2.dnn darknet)", "accuracy": "none published"},
        ),
    )
}


def models_dir() -> Path:
    """The models folder: `$PASSKIT_MODELS`, else `~/.cache/passkit/models`."""
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else DEFAULT_DIR.expanduser()


def get(name: str) -> Model:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# (path, size, mtime_ns) -> sha256, so a worker that builds several filters hashes each file once
_HASHED: dict[tuple[str, int, int], str] = {}


def verify_file(base: Path, mf: ModelFile) -> Path | None:
    """The file's path if present with the pinned sha256; None if absent; `ChecksumError` if different."""
    p = base / mf.path
    if not p.is_file():
        return None
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    actual = _HASHED.get(key)
    if actual is None:
        actual = _HASHED[key] = sha256_file(p)
    if actual != mf.sha256:
        raise ChecksumError(p, mf.sha256, actual)
    return p


def package_version(model: Model) -> str | None:
    """Installed version of the package that carries the weights, None if it is not installed."""
    if model.package is None:
        return None
    try:
        return metadata.version(model.package)
    except metadata.PackageNotFoundError:
        return None


def find(name: str, base: Path | None = None) -> Path | None:
    """Path of the model's weights file, present and sha256-verified; None if any needed file is missing.

    Raises `ChecksumError` (naming the file, expected and actual hash) when a present file differs.
    For models that ship inside a package (mtcnn, hog) there is no file: returns None; use
    `identity(name)` for what to record.
    """
    model = get(name)
    if not model.files:
        return None
    base = models_dir() if base is None else Path(base)
    paths = [verify_file(base, f) for f in model.needed]
    if any(p is None for p in paths):
        return None
    main = model.main
    assert main is not None
    return base / main.path


def missing(name: str, base: Path | None = None) -> list[str]:
    """Needed files of the model that are absent under the models folder (relative paths)."""
    base = models_dir() if base is None else Path(base)
    if "tv_weights" in get(name).extra:  # a torchvision release file (passkit.tvweights)
        return [] if (base / get(name).extra["file"]).is_file() else [get(name).extra["file"]]
    return [f.path for f in get(name).needed if not (base / f.path).is_file()]


def identity(name: str) -> str:
    """What a manifest records for the weights: the pinned sha256, or `package==version`."""
    model = get(name)
    if model.package is not None:
        return f"{model.package}=={package_version(model) or 'not-installed'}"
    main = model.main
    assert main is not None
    return main.sha256


def verify(name: str, base: Path | None = None) -> dict[str, str]:
    """Status of every file of a model: "ok", "missing" or "sha256 mismatch: got <hex>" (for `models verify`)."""
    base = models_dir() if base is None else Path(base)
    if "tv_weights" in get(name).extra:
        from passkit import tvweights

        return tvweights.verify(name, base)
    out: dict[str, str] = {}
    for f in get(name).files:
        try:
            out[f.path] = "ok" if verify_file(base, f) is not None else "missing"
        except ChecksumError as e:
            out[f.path] = f"sha256 mismatch: got {e.actual}"
    return out


# ----------------------------------------------------------------------------- torchvision (local weights)

TORCHVISION_DEFAULT_ARCH = "fasterrcnn_mobilenet_v3_large_fpn"


def torchvision_release(arch: str) -> tuple[str, str] | None:
    """(URL, sha256 prefix) of torchvision's own COCO weights for `arch`, None if unknown.

    torchvision pins its weights by the first hex digits of their sha256 in the file name
    (`<arch>_coco-<hex>.pth`); a user's local copy is checked against that prefix.
    """
    import re

    try:
        import torchvision

        url = torchvision.models.get_model_weights(arch).DEFAULT.url
    except (ImportError, ValueError, AttributeError):
        return None
    m = re.search(r"-([0-9a-f]{6,})\.pth$", url)
    return (url, m.group(1)) if m else None


REGISTRY["torchvision"] = Model(
    name="torchvision",
    task="person",
    detector="torchvision_coco:TorchvisionDetector",
    license="BSD-3-Clause (torchvision code); weights: see the torchvision model card of the chosen arch",
    source="https://pytorch.org/vision/stable/models.html#object-detection (a local .pth the user supplies)",
    package="torchvision",
    notes="not fetched by passkit: set `weights:` (and `arch:`, `sha256:`) on the detector in the spec; "
    "files named like torchvision's release (<arch>_coco-<hex>.pth) are checked against that hex prefix",
)


# ----------------------------------------------------------------------------- fetch


class FetchError(ModelError):
    """A model file could not be downloaded (no network, HTTP error, or wrong bytes)."""


def fetch(
    name: str,
    base: Path | None = None,
    mirror: str | None = None,
    timeout: float = 30.0,
    on_file: Any = None,
) -> dict[str, str]:
    """Download a model's files into the models folder, each checked against its pinned sha256.

    Files already present with the right hash are left alone ("present"). `mirror`: a URL laid out
    like the models folder (`{mirror}/{path}`), for air-gapped sites with an internal copy; by
    default each file comes from its public `url`. A file is written to a temporary name and renamed
    only after its hash matched, so a failed download never leaves a half file behind.
    Raises `FetchError` with what to do when the network cannot be reached.
    """
    import requests

    model = get(name)
    if "tv_weights" in model.extra:  # through torchvision's weights API, its hash prefix checked
        from passkit import tvweights

        return tvweights.fetch(name, models_dir() if base is None else Path(base), mirror)
    if not model.files:
        return {"(package)": f"ships inside {model.package}; nothing to fetch"}
    base = models_dir() if base is None else Path(base)
    out: dict[str, str] = {}
    for mf in model.files:
        try:
            if verify_file(base, mf) is not None:
                out[mf.path] = "present"
                continue
        except ChecksumError:
            pass  # replaced below
        url = f"{mirror.rstrip('/')}/{mf.path}" if mirror else mf.url
        try:
            r = requests.get(url, timeout=timeout, headers={"User-Agent": "passkit-models-fetch"})
        except requests.RequestException as e:
            raise FetchError(
                f"cannot download {url}: {type(e).__name__}: {e}. This machine seems to have no internet "
                f"access. Copy the files from a machine that has (`passkit models fetch` there, then copy "
                f"{base}), or pass --mirror with an internal copy, or set {ENV_VAR} to a folder that holds them."
            ) from None
        if r.status_code != 200:
            raise FetchError(f"cannot download {url}: HTTP {r.status_code}")
        actual = hashlib.sha256(r.content).hexdigest()
        if actual != mf.sha256:
            raise FetchError(f"{url}: sha256 {actual} is not the pinned {mf.sha256}; file not saved")
        dest = base / mf.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(dest, r.content)
        out[mf.path] = "fetched"
        if on_file:
            on_file(mf.path)
    return out


# ----------------------------------------------------------------------------- strong torchvision detectors

_TV_LICENSE = (
    "BSD-3-Clause (torchvision code); weights: torchvision publishes no separate licence and says its "
    "pre-trained models 'may have their own licenses or terms and conditions derived from the dataset used "
    "for training' (COCO 2017: annotations CC BY 4.0, images under their Flickr licences)"
)


def _tv_entry(name: str, detector: str, enum: str, url: str, recipe: str, notes: str, **extra: str) -> Model:
    """A torchvision release file kept in `<models>/torchvision/` and pinned by the sha256 prefix that
    torchvision puts in its file name (see passkit.tvweights)."""
    file = "torchvision/" + url.rsplit("/", 1)[1]
    prefix = file.rsplit("-", 1)[1].removesuffix(".pth")
    return Model(
        name=name, task="person", detector=detector, license=_TV_LICENSE,
        source=f"{url} (torchvision.models.detection.{enum}; recipe {recipe})",
        package="torchvision", notes=notes,
        extra={"tv_weights": enum, "url": url, "file": file, "sha256_prefix": prefix, **extra},
    )


for _m in (
    _tv_entry(
        "faster_rcnn_v2", "torchvision_strong:FasterRCNNV2Detector",
        "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
        "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth",
        "https://github.com/pytorch/vision/pull/5763",
        "Faster R-CNN ResNet-50 FPN v2, 91 COCO classes; score = the person class (label 1)",
        builder="fasterrcnn_resnet50_fpn_v2", coco_map="46.7 (box, torchvision's model card)", size_mb="167.1",
    ),
    _tv_entry(
        "keypoint_rcnn", "torchvision_strong:KeypointRCNNDetector",
        "KeypointRCNN_ResNet50_FPN_Weights.COCO_V1",
        "https://download.pytorch.org/models/keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
        "https://github.com/pytorch/vision/tree/main/references/detection#keypoint-r-cnn",
        "Keypoint R-CNN ResNet-50 FPN, trained on COCO people only; score = its person box score",
        builder="keypointrcnn_resnet50_fpn", coco_map="54.6 (person box), 65.0 (keypoints), torchvision's model card",
        size_mb="226.1",
    ),
):
    REGISTRY[_m.name] = _m

# named sets for `passkit models fetch --set NAME`
SETS: dict[str, tuple[str, ...]] = {
    "strong": ("faster_rcnn_v2", "keypoint_rcnn"),
}
