"""Writing so that a kill never leaves a half-written file or folder: write beside it, then rename.

Every writer of the project (PNGs, manifests' pictures, summaries, checkpoints, final weights,
evaluation tables) goes through `atomic_path`, so a reader finds either the old result or the new
one, never a mixture.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from PIL import Image


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write a file or a folder to; it becomes `path` when the
    block ends without an error, and disappears otherwise. An existing `path` is replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    _remove(partial)
    try:
        yield partial
        if path.is_dir() and not path.is_symlink():
            retired = path.with_name(f".{path.name}.{os.getpid()}.old")
            os.replace(path, retired)  # a folder cannot be renamed onto another: move the old one aside first
            os.replace(partial, path)
            _remove(retired)
        else:
            os.replace(partial, path)
    finally:
        _remove(partial)


def write_png(path: str | os.PathLike, image: Image.Image) -> Path:
    with atomic_path(path) as partial:
        image.save(partial, format="PNG")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return Path(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
