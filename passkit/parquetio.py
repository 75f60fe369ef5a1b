"""Reading Parquet files a batch at a time in memory that does not grow with the file.

pyarrow's ParquetFile pre-buffers by default: the byte ranges it reads stay cached until the reader
is done, so walking a 20-million-row file with iter_batches holds most of the file (about 1 GiB
for a PASS-size url list). Every reader that walks a file whose size grows with the dataset opens
it here, without pre-buffering.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import pyarrow.parquet as pq


def open_parquet(source: str | Path | IO[bytes]) -> pq.ParquetFile:
    """`source` as a ParquetFile whose batches are read and released one at a time."""
    return pq.ParquetFile(source, pre_buffer=False, buffer_size=1 << 20)
