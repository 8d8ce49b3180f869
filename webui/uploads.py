"""Uploaded selfies: decoded by the engine's own loader, deleted from disk in the same request.

Gradio stores uploads by content, so two requests carrying the same bytes share one file; the second
may find it already deleted by the first. Decoded photos therefore stay in memory (never on disk)
for a few minutes, keyed by that content-named path.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import gradio as gr
from gradio.data_classes import FileData
from gradio_client.utils import decode_base64_to_binary, is_http_url_like
from PIL import Image

from portrait.errors import PortraitError
from portrait.images import load_image

KEPT_SIDE = 2048  # longest side of a photo held in memory between requests


class FaceUpload(gr.Image):
    """gr.Image whose upload reaches the handler undecoded: our own loader reads it (with its clear
    errors for corrupt, huge or odd images) and deletes it right after."""

    is_template = True  # same browser component as gr.Image

    async def async_move_resource_to_block_cache(self, url_or_file_path: str | Path | None) -> str | None:
        """Gradio would fetch a link sent in place of an upload; the app fetches nothing on a request's behalf."""
        if url_or_file_path is not None and is_http_url_like(str(url_or_file_path)):
            raise gr.Error("Links are not fetched: upload the photo itself.")
        return await super().async_move_resource_to_block_cache(url_or_file_path)

    def preprocess(self, payload: FileData | None) -> str | bytes | None:
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            return decode_base64_to_binary(payload.url)[0]
        return payload.path


class UploadReader:
    """Decodes uploads and deletes them from disk at once: selfies are not kept on the server."""

    def __init__(self, keep_seconds: float = 300.0):
        self.keep_seconds = keep_seconds
        self._recent: dict[str, tuple[float, Image.Image | PortraitError]] = {}  # a failed read keeps its error
        self._lock = threading.Lock()

    def read(self, uploads: list[str | bytes | None]) -> list[Image.Image | None]:
        """One decoded photo (or None) per upload; the same upload given twice is decoded once."""
        decoded: dict[str | bytes, Image.Image | None] = {}
        for upload in uploads:
            if upload is not None and upload not in decoded:
                decoded[upload] = shrink(load_image(upload)) if isinstance(upload, bytes) else self._read_file(upload)
        return [None if upload is None else decoded[upload] for upload in uploads]

    def _read_file(self, upload: str) -> Image.Image | None:
        path = Path(upload)
        now = time.monotonic()
        with self._lock:
            self._recent = {key: entry for key, entry in self._recent.items() if now - entry[0] < self.keep_seconds}
            if not path.is_file():
                entry = self._recent.get(upload)
                if entry and isinstance(entry[1], PortraitError):
                    raise entry[1]  # this upload failed before: never fall back to an older photo
                return entry[1] if entry else None  # None: read by an earlier step, past keeping
            try:
                image = shrink(load_image(path))
            except PortraitError as error:
                self._recent[upload] = (now, error)
                raise
            finally:
                self._delete_if_uploaded(path)
            self._recent[upload] = (now, image)
            return image

    @staticmethod
    def _delete_if_uploaded(path: Path) -> None:
        if path.resolve().is_relative_to(Path(gr.utils.get_upload_folder()).resolve()):
            path.unlink(missing_ok=True)
            if path.parent.is_dir() and not any(path.parent.iterdir()):
                path.parent.rmdir()


def shrink(image: Image.Image, side: int = KEPT_SIDE) -> Image.Image:
    """A copy small enough to keep in memory for a session; faces stay far above what φ needs."""
    if max(image.size) <= side:
        return image
    scale = side / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
