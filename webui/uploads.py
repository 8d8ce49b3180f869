"""Uploaded selfies: read into memory and deleted from disk before anything else of the request runs.

Gradio writes an upload to its upload folder and passes the request its path. `FaceUpload.preprocess`
(the first step of every request that carries a photo, before the other inputs are checked) reads the
bytes and deletes the file, so a request that fails afterwards (a bad seed, a value out of range, no
face) leaves nothing behind. A request that never starts (the queue is full) or never reads its uploads
has them deleted when it ends (`delete_uploads_of_refused_requests`). The decoded photo lives only while
its request runs; what is remembered afterwards is the face's encoding (webui/faces.py).

Gradio names an upload by its bytes (a folder named by their hash), so every visitor who uploads the same
bytes, and every input naming that upload, shares one file. Each waiting or running request therefore
claims the files it names (`UploadClaims`); reading a file gives up the reader's claim, and the file is
deleted when no claim is left: at once when one request names it, after the last reader otherwise. A request
that names one file twice (the selfie also as the control picture) reads it once (`RequestUploads`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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
# How long a request whose upload is not there waits for its face's encoding: the visitor's earlier request
# (the face preview) may have read and deleted the file and still be encoding it.
ARRIVAL_SECONDS = 15.0


@dataclass(frozen=True)
class Upload:
    """One request's photo: its name (what the server remembers it by) and its bytes, when it still had them."""

    key: str
    data: bytes | None  # None: the file is gone (an earlier request naming it read it)
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


class UploadClaims:
    """Which waiting or running requests name each uploaded file; a file is deleted when no claim is left.

    A request claims every file it names when the queue accepts it. It gives up a claim when it reads the
    file or when it ends (whatever ended it: done, failed, refused, cancelled); the last claim given up
    deletes the file. Claims are counted per request, so a file named twice by one request is one claim."""

    def __init__(self):
        self._lock = threading.Lock()
        self._count: Counter[Path] = Counter()
        self._held: dict[int, tuple[object, set[Path]]] = {}  # id(owner) → (owner, its files); owner kept alive

    def claim(self, owner: object, paths: Iterable[str | Path]) -> None:
        files = {_normal(path) for path in paths}
        with self._lock:
            _, held = self._held.setdefault(id(owner), (owner, set()))
            for file in files - held:
                held.add(file)
                self._count[file] += 1

    def release(self, owner: object | None, path: str | Path | None = None) -> None:
        """Give up `owner`'s claim on `path` (on all its files when None; no claim when `owner` is None) and
        delete each of those files that nobody claims any more."""
        with self._lock:
            _, held = self._held.get(id(owner), (owner, set()))
            files = set(held) if path is None else {_normal(path)}
            for file in files & held:
                held.discard(file)
                self._count[file] -= 1
                if not self._count[file]:
                    del self._count[file]
            if not held:
                self._held.pop(id(owner), None)
            for file in files:
                if file not in self._count:
                    delete_if_uploaded(file)

    def claims(self, path: str | Path) -> int:
        with self._lock:
            return self._count[_normal(path)]

    def __len__(self) -> int:
        """Requests holding a claim."""
        with self._lock:
            return len(self._held)


def _normal(path: str | Path) -> Path:
    return Path(path).resolve()


CLAIMS = UploadClaims()  # the server's; the queue's hooks and `take` share it


@dataclass
class RequestUploads:
    """The uploads one request has read, by file: a second input naming the same file gets the same bytes."""

    owner: object
    taken: dict[Path, Upload] = field(default_factory=dict)


_REQUEST: contextvars.ContextVar[RequestUploads | None] = contextvars.ContextVar("request_uploads", default=None)


@contextlib.contextmanager
def one_request(owner: object) -> Iterator[RequestUploads]:
    """Within this block `take` reads each file once for `owner`; its claims are given up when the block ends."""
    request = RequestUploads(owner)
    token = _REQUEST.set(request)
    try:
        yield request
    finally:
        _REQUEST.reset(token)
        request.taken.clear()  # the bytes go with the request, even if something still holds its context
        CLAIMS.release(owner)


def take(path: str) -> Upload:
    """The file's bytes; the file deleted (when Gradio's upload folder holds it) once no other waiting or
    running request claims it. Within a request, a file already read is not read again."""
    file, request = Path(path), _REQUEST.get()
    if request is not None and _normal(file) in request.taken:
        return request.taken[_normal(file)]
    if not file.exists():
        return Upload(path, None, file.name)
    check_regular_file(file)
    try:
        data = file.read_bytes()
    finally:
        CLAIMS.release(None if request is None else request.owner, file)
    upload = Upload(path, data, file.name)
    if request is not None:
        request.taken[_normal(file)] = upload
    return upload


def discard(path: str) -> None:
    """This request is done with `path` without reading it through `take` (the editor's own copies)."""
    request = _REQUEST.get()
    CLAIMS.release(None if request is None else request.owner, path)


def decode(upload: Upload) -> Image.Image:
    """The photo, no larger than WORKING_SIDE (a 1×60000 strip stays at least a pixel wide)."""
    image = load_image(upload.data, name=upload.name)
    if max(image.size) > WORKING_SIDE:
        image = image.resize(scaled_size(image.size, WORKING_SIDE), Image.LANCZOS)
    return image


def delete_if_uploaded(path: Path) -> None:
    """Delete the file `path` if it lies in Gradio's upload folder; anything else is not ours. Its folder stays
    (empty, named by a hash) until Gradio's sweep: Gradio may be writing the same bytes into it for another upload."""
    if path.resolve().is_relative_to(Path(gr.utils.get_upload_folder()).resolve()) and path.is_file():
        path.unlink(missing_ok=True)


def uploaded_paths(data: Any) -> list[Path]:
    """Every file path a request's JSON names (Gradio's FileData objects), at any depth; links are not files."""
    if isinstance(data, dict):
        path, kind = data.get("path"), data.get("meta", {}).get("_type")
        own = [Path(path)] if isinstance(path, str) and kind == "gradio.FileData" and not is_http_url_like(path) else []
        return own + [path for value in data.values() for path in uploaded_paths(value)]
    if isinstance(data, (list, tuple)):
        return [path for value in data for path in uploaded_paths(value)]
    return []


def delete_uploads_of_refused_requests(demo: gr.Blocks) -> None:
    """Every request the queue accepts claims the files it names (`UploadClaims`) and gives the claims up when
    it ends, whatever ended it: done, failed before its photo was read (Gradio refused its values), refused
    (the queue is full), cancelled or abandoned while it waits. A file nobody claims any more is deleted then,
    not at Gradio's cache sweep. While a request runs, its reads go through `one_request`. Call after
    `demo.queue()`."""
    queue = demo._queue
    push, remove_from_queue, clean_events = queue.push, queue.remove_from_queue, queue.clean_events
    process_events = queue.process_events

    @functools.wraps(process_events)
    async def process_in_one_request(events, *args, **kwargs):
        # One event per call: the app has no batched functions.
        reads = one_request(events[0].data) if len(events) == 1 else contextlib.nullcontext()
        try:
            with reads:
                return await process_events(events, *args, **kwargs)
        finally:
            for event in events:
                CLAIMS.release(event.data)

    @functools.wraps(push)
    async def push_and_claim(body, *args, **kwargs):
        CLAIMS.claim(body, uploaded_paths(getattr(body, "data", None)))
        try:
            result = await push(body, *args, **kwargs)
        except BaseException:
            CLAIMS.release(body)
            raise
        if not result[0]:  # refused: the queue is full, or Gradio's validator said no
            CLAIMS.release(body)
        return result

    @functools.wraps(remove_from_queue)
    async def remove_and_release(event_id: str):
        waiting = [event for event in _waiting(queue) if event._id == event_id]
        await remove_from_queue(event_id)
        _release_dropped(queue, waiting)

    @functools.wraps(clean_events)
    async def clean_events_and_release(*, session_hash: str | None = None, event_id: str | None = None):
        waiting = [event for event in _waiting(queue) if event.session_hash == session_hash or event._id == event_id]
        await clean_events(session_hash=session_hash, event_id=event_id)
        _release_dropped(queue, waiting)

    queue.push, queue.process_events = push_and_claim, process_in_one_request
    queue.remove_from_queue, queue.clean_events = remove_and_release, clean_events_and_release


def _waiting(queue) -> list:
    return [event for waiting in queue.event_queue_per_concurrency_id.values() for event in waiting.queue]


def _release_dropped(queue, events: list) -> None:
    """The claims of those `events` that left the queue without starting (a started one gives up its own)."""
    still_waiting = {id(event) for event in _waiting(queue)}
    started = {id(event) for jobs in queue.active_jobs if jobs for event in jobs}
    for event in events:
        if id(event) not in still_waiting and id(event) not in started:
            CLAIMS.release(event.data)


class UploadReader:
    """The photos a request carries besides its selfie (more selfies, a control picture, a photo to edit):
    decoded for this request only, their files deleted once read (`take`); nothing is kept afterwards."""

    def read(self, uploads: list[Upload | str | bytes | None]) -> list[Image.Image | None]:
        """One decoded photo (or None: no photo, or its file already taken) per upload."""
        taken = [Upload.of(upload) for upload in uploads]
        return [None if upload is None or upload.data is None else decode(upload) for upload in taken]
