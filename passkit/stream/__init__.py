"""Reading a release for training: the rank-balanced, resumable loader, fast JPEG decode, and a
Hugging Face `datasets` view.

`passkit.stream.loader(...)` is the PyTorch entry point (see passkit/stream/loader.py for the
design); `passkit.stream.decode` holds the crop-first, reduced-scale JPEG transforms;
`passkit.stream.plan` the pure epoch plan; `passkit.stream.hf.dataset(...)` (needs the optional
`datasets` package) gives a `datasets.Dataset` with an Image column and the attribution columns.
Importing this package does not import `datasets`.
"""

from passkit.stream import decode
from passkit.stream.loader import (
    Catalog,
    LoaderConfig,
    Release,
    ReleaseDataset,
    ReleaseLoader,
    SampleError,
    collate,
    default_transform,
    loader,
    normalize,
    open_release,
    reraise_exception,
)
from passkit.stream.plan import RankPlan, rank_plan
from passkit.stream.storage import ShardIntegrityError

__all__ = [
    "Catalog",
    "LoaderConfig",
    "RankPlan",
    "Release",
    "ReleaseDataset",
    "ReleaseLoader",
    "SampleError",
    "ShardIntegrityError",
    "collate",
    "decode",
    "default_transform",
    "loader",
    "normalize",
    "open_release",
    "rank_plan",
    "reraise_exception",
]
