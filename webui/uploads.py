"""Uploaded selfies: read into memory and deleted from disk before anything else of the request runs.

Gradio writes an upload to its upload folder and passes the request its path. `FaceUpload.preprocess`
(the first step of every request that carries a photo, before the other inputs are checked) reads the
bytes and deletes the file, so a request that fails afterwards (a bad seed, a value out of range, no
face) leaves nothing behind. A request that never starts (the queue is full) has its uploads deleted
by `delete_uploads_of_refused_requests`. The decoded photo lives only while its request runs; what is
remembered afterwards is the face's encoding (webui/faces.py).

Gradio names uploads by content, so two requests carrying the same bytes share one file; the second
may find it already taken by the first, and is then served from the remembered encoding.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData, ImageData
from gradio_client.utils import decode_base64_to_binary, is_http_url_like
from PIL import Image
from pydantic import ValidationError, model_validator

from portrait.errors import InvalidImageError, PortraitError
from portrait.images import check_regular_file, load_image, scaled_size

WORKING_SIDE = 2048  # longest side a photo is analysed at; faces stay far above what φ needs
# How long a request waits for an upload that is not there yet: Gradio answers a large upload before its
# background task has moved the file into place, and a request carrying the same bytes may still be reading them.
ARRIVAL_SECONDS = 15.0


@dataclass(frozen=True)
class Upload:
    """One request's photo: its name (what the server remembers it by) and its bytes, when it still had them."""

    key: str
    data: bytes | None  # None: an earlier request carrying the same bytes took the file
    name: str = "the upload"  # the file's own name, for messages (never the server's folder)

    @classmethod
    def of(cls, value: "Upload | str | bytes | None") -> "Upload | None":
        """What a handler was given (an Upload from the browser or API, bytes or a path from Python)."""
        if value is None or isinstance(value, Upload):
            return value
        if isinstance(value, bytes):
            return cls(f"bytes:{hashlib.sha256(value).hexdigest()}", value)
        if isinstance(value, str):
            return take(value)
        raise InvalidImageError("The photo must be an uploaded image file.")


class UploadData(ImageData):
    """What an API caller sends for a photo; anything but a file description counts as no photo (the UI's
    "Upload a photo of your face first"), rather than failing Gradio's validation with a pydantic report."""

    @model_validator(mode="before")
    @classmethod
    def _no_file(cls, value: Any) -> Any:
        if isinstance(value, ImageData):
            return value
        try:
            return ImageData.model_validate(value).model_dump()
        except ValidationError:
            return {}


class FaceUpload(gr.Image):
    """gr.Image whose upload reaches the handler as bytes, its file already deleted: our own loader
    decodes it (with its clear errors for corrupt, huge or odd images)."""

    is_template = True  # same browser component as gr.Image
    data_model = UploadData

    async def async_move_resource_to_block_cache(self, url_or_file_path: str | Path | None) -> str | None:
        """Gradio would fetch a link sent in place of an upload; the app fetches nothing on a request's behalf."""
        if url_or_file_path is not None and is_http_url_like(str(url_or_file_path)):
            raise gr.Error("Links are not fetched: upload the photo itself.")
        return await super().async_move_resource_to_block_cache(url_or_file_path)

    def preprocess(self, payload: FileData | None) -> Upload | None:
        if payload is None:
            return None
        try:
            if isinstance(payload.url, str) and payload.url.startswith("data:"):
                return Upload.of(decode_base64_to_binary(payload.url)[0])
            return take(payload.path) if isinstance(payload.path, str) and payload.path else None
        except PortraitError as error:
            raise gr.Error(str(error)) from error  # Gradio would wrap anything else in a report of the whole event
        except ValueError as error:
            raise gr.Error("The photo's data could not be read; upload the image file itself.") from error


def take(path: str) -> Upload:
    """The file's bytes, and the file deleted when Gradio's upload folder holds it."""
    file = Path(path)
    if not file.exists():
        return Upload(path, None, file.name)
    check_regular_file(file)
    try:
        data = file.read_bytes()
    finally:
        delete_if_uploaded(file)
    return Upload(path, data, file.name)


def decode(upload: Upload) -> Image.Image:
    """The photo, no larger than WORKING_SIDE (a 1×60000 strip stays at least a pixel wide)."""
    image = load_image(upload.data, name=upload.name)
    if max(image.size) > WORKING_SIDE:
        image = image.resize(scaled_size(image.size, WORKING_SIDE), Image.LANCZOS)
    return image


def delete_if_uploaded(path: Path) -> None:
    """Delete `path` if it lies in Gradio's upload folder; anything else is not ours. Its folder stays (empty,
    named by a hash) until Gradio's sweep: Gradio may be copying the same bytes into it for another request."""
    if path.resolve().is_relative_to(Path(gr.utils.get_upload_folder()).resolve()):
        path.unlink(missing_ok=True)


def uploaded_paths(data: Any) -> list[Path]:
    """Every file path a request's JSON names (Gradio's FileData objects), at any depth."""
    if isinstance(data, dict):
        own = [Path(data["path"])] if isinstance(data.get("path"), str) and data.get("meta", {}).get("_type") == "gradio.FileData" else []
        return own + [path for value in data.values() for path in uploaded_paths(value)]
    if isinstance(data, (list, tuple)):
        return [path for value in data for path in uploaded_paths(value)]
    return []


def delete_uploads_of_refused_requests(demo: gr.Blocks) -> None:
    """Requests that never reach a handler (the queue is full, Gradio refuses their values, the visitor cancels
    or leaves while they wait) would leave their uploads for Gradio's cache sweep; delete them when the request
    ends, whatever ended it. Call after `demo.queue()`."""
    queue = demo._queue
    push, remove_from_queue, clean_events = queue.push, queue.remove_from_queue, queue.clean_events
    process_events = queue.process_events

    @functools.wraps(process_events)
    async def process_and_clean_up(events, *args, **kwargs):
        try:
            return await process_events(events, *args, **kwargs)
        finally:
            for event in events:
                _delete_uploads_of(event.data)

    @functools.wraps(push)
    async def push_or_clean_up(body, *args, **kwargs):
        accepted, *rest = result = await push(body, *args, **kwargs)
        if not accepted:
            _delete_uploads_of(body)
        return result

    @functools.wraps(remove_from_queue)
    async def remove_and_clean_up(event_id: str):
        waiting = [event for event in _waiting(queue) if event._id == event_id]
        await remove_from_queue(event_id)
        _delete_uploads_of_dropped(queue, waiting)

    @functools.wraps(clean_events)
    async def clean_events_and_uploads(*, session_hash: str | None = None, event_id: str | None = None):
        waiting = [event for event in _waiting(queue) if event.session_hash == session_hash or event._id == event_id]
        await clean_events(session_hash=session_hash, event_id=event_id)
        _delete_uploads_of_dropped(queue, waiting)

    queue.push, queue.remove_from_queue, queue.clean_events = push_or_clean_up, remove_and_clean_up, clean_events_and_uploads
    queue.process_events = process_and_clean_up


def _waiting(queue) -> list:
    return [event for waiting in queue.event_queue_per_concurrency_id.values() for event in waiting.queue]


def _delete_uploads_of_dropped(queue, events: list) -> None:
    """The uploads of those `events` that left the queue without starting (a started one reads its own)."""
    still_waiting = {id(event) for event in _waiting(queue)}
    started = {id(event) for jobs in queue.active_jobs if jobs for event in jobs}
    for event in events:
        if id(event) not in still_waiting and id(event) not in started:
            _delete_uploads_of(event.data)


def _delete_uploads_of(body: Any) -> None:
    for path in uploaded_paths(getattr(body, "data", None)):
        if not is_http_url_like(str(path)) and path.is_file():
            delete_if_uploaded(path)


class UploadReader:
    """The photos a request carries besides its selfie (more selfies, a control picture, a photo to edit):
    decoded for this request only, their files deleted at once; nothing is kept afterwards."""

    def read(self, uploads: list[Upload | str | bytes | None]) -> list[Image.Image | None]:
        """One decoded photo (or None: no photo, or its file already taken) per upload."""
        taken = [Upload.of(upload) for upload in uploads]
        return [None if upload is None or upload.data is None else decode(upload) for upload in taken]
