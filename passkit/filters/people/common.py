"""What every people detector shares: the `Detector` base, errors, box lists and NMS, the tile grid,
and the runtime helpers that put a detector on the CPU or the GPU (ONNX Runtime, OpenVINO, torch, OpenCV).
An ONNX detector runs through `onnx_model`, on OpenVINO where it is installed (same scores, faster on
the CPU) and on ONNX Runtime otherwise.

Nothing here imports torch, OpenCV, ONNX Runtime or OpenVINO at module level: a detector pays for its runtime
only when it is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from passkit import models

if TYPE_CHECKING:
    from passkit.config import DetectorSpec

MAX_BOXES = 5  # boxes kept per detector per image (best first)
NMS_IOU = 0.45
TILE_OVERLAP = 0.25  # tiles of an n x n grid overlap by this fraction of a tile, so no person is cut in two
TILE_MIN_SIDE = 96  # images whose shorter side is under n * this are not tiled (tiles would be tiny)


class PeopleFilterError(RuntimeError):
    """The people filter cannot be built as specified (e.g. a required detector's weights are missing)."""


class DetectorUnavailable(PeopleFilterError):
    """This environment cannot run a detector (not its weights: its runtime); a detector marked
    `required: false` is then skipped with this reason, like one whose weights are missing."""


def _opencv_api(path: str) -> Any:
    """cv2 attribute `path` (e.g. "dnn.readNetFromDarknet"), or DetectorUnavailable saying why."""
    import cv2

    obj: Any = cv2
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise DetectorUnavailable(
                f"OpenCV {cv2.__version__} has no cv2.{path} (OpenCV 5 removed the Darknet loader and the "
                "HOG people detector): install opencv-python-headless<5, as passkit requires, or take the "
                "detector out of people.detectors"
            )
    return obj


# ----------------------------------------------------------------------------- images and boxes


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, rgba)
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU, top: int = MAX_BOXES) -> list[int]:
    """Greedy NMS on xyxy boxes; indices of the kept boxes, best first, at most `top`."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = np.maximum(0, x1 - x0) * np.maximum(0, y1 - y0)
    while order.size and len(keep) < top:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = w * h
        union = area[i] + area[rest] - inter
        order = rest[inter <= iou * np.maximum(union, 1e-9)]
    return keep


def _box_list(boxes: np.ndarray, scores: np.ndarray, keep: Sequence[int]) -> list[list[float]]:
    return [[*(round(float(v), 1) for v in boxes[i]), round(float(scores[i]), 4)] for i in keep]


def tile_grid(h: int, w: int, n: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """The n x n overlapping tiles (x0, y0, x1, y1) of an h x w image; [] when n < 2 or it is too small."""
    if n < 2 or min(h, w) < n * TILE_MIN_SIDE:
        return []
    th, tw = round(h / (n - (n - 1) * overlap)), round(w / (n - (n - 1) * overlap))
    out = []
    for i in range(n):
        for j in range(n):
            y0, x0 = round(i * (h - th) / (n - 1)), round(j * (w - tw) / (n - 1))
            out.append((x0, y0, x0 + tw, y0 + th))
    return out


# ----------------------------------------------------------------------------- runtimes and devices


def ort_providers(device: str) -> list[str]:
    """ONNX Runtime providers for a device; "cuda" needs onnxruntime-gpu (CUDA first, CPU as fallback);
    "auto" takes CUDA when this onnxruntime has it and the CPU otherwise."""
    if device not in ("cuda", "auto"):
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    have = ort.get_available_providers()
    if "CUDAExecutionProvider" not in have:
        if device == "auto":
            return ["CPUExecutionProvider"]
        raise PeopleFilterError(
            f"people.device is 'cuda' but onnxruntime {ort.__version__} has no CUDAExecutionProvider "
            f"(available: {', '.join(have)}). Install onnxruntime-gpu in place of onnxruntime "
            "(pip uninstall -y onnxruntime && pip install onnxruntime-gpu), or set people.device: cpu."
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _torch_device(device: str) -> str:
    """`device` for torch, or a clear error when "cuda" is asked for and torch cannot use it."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise PeopleFilterError(
            f"people.device is 'cuda' but torch {torch.__version__} sees no CUDA device (built for CUDA: "
            f"{torch.version.cuda or 'no'}); install a CUDA build of torch on a GPU machine, or set people.device: cpu"
        )
    return device


def _cv2_cuda() -> bool:
    """True when this OpenCV build can run DNN layers on CUDA (opencv-python-headless cannot)."""
    import cv2

    try:
        return cv2.cuda.getCudaEnabledDeviceCount() > 0
    except (AttributeError, cv2.error):
        return False


RUNTIMES = ("onnxruntime", "openvino")


def have_openvino() -> bool:
    """True when the openvino package can be imported (the optional `passkit[openvino]` extra)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


class OnnxModel:
    """One ONNX graph on ONNX Runtime or OpenVINO (CPU) behind one call, so a detector's pre- and
    post-processing do not depend on the runtime. `run` returns the outputs in the graph's order."""

    def __init__(self, runtime: str, run: Any, input_shape: tuple[int, ...], providers: list[str]):
        self.runtime = runtime
        self._run = run
        self.input_shape = input_shape
        self.providers = providers

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self._run(x)


def _ort_model(path: Path, threads: int, device: str, shape: tuple[int, ...] | None, name: str) -> OnnxModel:
    sess = _ort_session(path, threads, device)
    inp = sess.get_inputs()[0]
    declared = tuple(int(d) if isinstance(d, int) else -1 for d in inp.shape)
    if shape is not None and any(d not in (-1, s) for d, s in zip(declared, shape, strict=True)):
        raise DetectorUnavailable(
            f"detector {name!r}: onnxruntime cannot run input {list(shape)}: the graph fixes its input at "
            f"{list(declared)}. Install OpenVINO (pip install 'passkit[openvino]'), which reshapes the graph, "
            "or leave input_size at the default"
        )
    in_name = inp.name

    def run(x: np.ndarray) -> list[np.ndarray]:
        return sess.run(None, {in_name: x})

    return OnnxModel("onnxruntime", run, shape or declared, list(sess.get_providers()))


_OV_CORE: Any = None  # one OpenVINO Core per process: it holds the plugin and its thread pools


def _ov_model(path: Path, threads: int, shape: tuple[int, ...] | None, name: str) -> OnnxModel:
    global _OV_CORE
    import openvino as ov

    if _OV_CORE is None:
        _OV_CORE = ov.Core()
    model = _OV_CORE.read_model(str(path))
    if shape is not None and tuple(model.inputs[0].get_partial_shape().to_shape()) != shape:
        try:
            model.reshape(list(shape))
        except RuntimeError as e:
            raise DetectorUnavailable(f"detector {name!r}: OpenVINO cannot reshape its graph to {list(shape)}: {e}") from None
    config = {
        "INFERENCE_NUM_THREADS": max(1, threads),
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        # f32, not the bf16 OpenVINO picks on CPUs with AVX512-BF16/AMX: scores must match onnxruntime's
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": False,  # workers share the cores with other processes
    }
    compiled = _OV_CORE.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    n_out = len(compiled.outputs)

    def run(x: np.ndarray) -> list[np.ndarray]:
        request.infer({0: x})
        return [request.get_output_tensor(i).data.copy() for i in range(n_out)]

    in_shape = tuple(compiled.inputs[0].get_shape())
    return OnnxModel("openvino", run, in_shape, ["OpenVINO:CPU"])


def onnx_model(
    path: Path,
    threads: int,
    device: str = "cpu",
    runtime: str = "auto",
    shape: tuple[int, ...] | None = None,
    name: str = "",
    prefer: str = "openvino",
) -> OnnxModel:
    """An ONNX detector's graph on the runtime asked for. "auto": the detector's `prefer`red runtime on
    the CPU (the faster one measured by benchmarks/onnx_runtimes.py; scores are the same), OpenVINO
    whenever `shape` is set (ONNX Runtime cannot reshape a static input), ONNX Runtime when OpenVINO
    is not installed and for "cuda"."""
    if runtime not in ("auto", *RUNTIMES):
        raise PeopleFilterError(f"detector {name!r}: unknown runtime {runtime!r}; use auto, {', '.join(RUNTIMES)}")
    if runtime == "openvino":
        if device == "cuda":
            raise PeopleFilterError(f"detector {name!r}: runtime openvino runs on the CPU; set people.device: cpu")
        if not have_openvino():
            raise DetectorUnavailable(
                f"detector {name!r}: runtime openvino is not installed: pip install 'passkit[openvino]', "
                "or set its runtime to auto or onnxruntime"
            )
        return _ov_model(path, threads, shape, name)
    if runtime == "onnxruntime":
        return _ort_model(path, threads, device, shape, name)
    gpu = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in ort_providers("auto"))
    if not gpu and have_openvino() and (prefer == "openvino" or shape is not None):
        return _ov_model(path, threads, shape, name)
    return _ort_model(path, threads, device, shape, name)


def _ort_session(path: Path, threads: int, device: str = "cpu") -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=ort_providers(device))


# ----------------------------------------------------------------------------- weights


def _needs_files_msg(name: str, base: Path, absent: list[str]) -> str:
    return (
        f"people filter: detector {name!r} is required but its weights are not in {base} "
        f"(missing: {', '.join(absent)}). Set {models.ENV_VAR} to a folder that holds them, or run "
        f"`passkit models fetch {name}`; or mark the detector `required: false` in the spec to skip it."
    )


def weights_file(name: str, base: Path) -> Path:
    """The sha256-checked weights file of a registry model; `FileNotFoundError` (which the ensemble
    turns into a skip or an error) when a needed file is absent. A present file with the wrong bytes
    raises `models.ChecksumError`: a wrong file is never silently skipped."""
    path = models.find(name, base)
    if path is None:
        raise FileNotFoundError(_needs_files_msg(name, base, models.missing(name, base)))
    return path


# ----------------------------------------------------------------------------- the detector interface


class Detector:
    """One detector with its model loaded once. `detect` takes RGB uint8 arrays (H, W, 3)."""

    name: str = ""
    task: str = ""

    def __init__(self, weights: str, sha256: str | None, version: str | None = None):
        self.weights = weights  # what the manifest records: sha256 or "package==version"
        self.sha256 = sha256
        self.version = version
        self.params: dict[str, Any] = {}  # settings that change scores, recorded in the manifest

    @classmethod
    def from_spec(cls, spec: DetectorSpec, device: str, base: Path, threads: int) -> Detector:
        """Build this detector for a spec entry, so `build_detector` needs no per-detector branch.

        `base` is the models folder; raise `FileNotFoundError` when the weights are absent there."""
        raise NotImplementedError

    def detect(self, images: list[np.ndarray]) -> list[list[list[float]]]:
        raise NotImplementedError
