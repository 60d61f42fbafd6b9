"""Workdirs and model sources that may live on a bucket (`gs://BUCKET/run`) or on a local disk, as one type.

`pathlib.Path("gs://b/run")` folds the URL into `gs:/b/run`; `etils.epath.Path` (orbax's path type) keeps it
and reads and writes through the bucket's client, so everything that touches a workdir goes through here.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from etils import epath


def is_url(path: Any) -> bool:
    """`gs://...`, `s3://...`: a location epath reaches through a storage client, not the local file system."""
    return "://" in os.fspath(path)


def workdir(path: Any) -> epath.Path:
    """`path` as an `epath.Path`: a URL as it is, a local path made absolute."""
    return epath.Path(path) if is_url(path) else epath.Path(os.path.abspath(os.fspath(path)))


def absolute(path: Any) -> str:
    """The string of `workdir(path)` (what a model card records)."""
    return os.fspath(workdir(path))


def local_or_url(path: Any) -> pathlib.Path | epath.Path:
    """A `pathlib.Path` for a local path (what the Hugging Face readers take), an `epath.Path` for a URL."""
    return epath.Path(path) if is_url(path) else pathlib.Path(path)


def write_atomic(path: epath.Path, data: str | bytes) -> None:
    """Writes `path` as a whole: locally through a temporary file renamed over it (readers never see half a
    file); an object store writes an object whole anyway."""
    target = path if is_url(path) else path.parent / (path.name + ".tmp")
    if isinstance(data, bytes):
        target.write_bytes(data)
    else:
        target.write_text(data)
    if target != path:
        os.replace(target, path)
