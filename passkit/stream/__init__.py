"""Reading a release for training: the WebDataset loader, and a Hugging Face `datasets` view.

`passkit.stream.loader(...)` is the PyTorch entry point; `passkit.stream.hf.dataset(...)` (needs the
optional `datasets` package) gives a `datasets.Dataset` with an Image column and the attribution
columns. Importing this package does not import `datasets`.
"""

from passkit.stream.loader import (
    Release,
    ReleaseDataset,
    ReleaseLoader,
    collate,
    default_transform,
    loader,
    open_release,
)

__all__ = [
    "Release",
    "ReleaseDataset",
    "ReleaseLoader",
    "collate",
    "default_transform",
    "loader",
    "open_release",
]
