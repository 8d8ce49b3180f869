"""What the server remembers of a visitor's face between requests: its encoding, a few kilobytes, never the photo.

A photo is decoded, its face found and encoded, and the photo dropped, all in the request that brought it.
What stays is the identity (φ's feature and embedding, 4 KB at SD 1.5 size) and the detector's notice,
under the upload's name, so that Generate after the preview needs no second upload. Entries live
`ttl_seconds` after their last use, and all of them together stay under `max_bytes`: when a new one
would pass it, the least recently used go first. A visitor sending photos with fresh sessions therefore
moves the oldest entries out instead of growing the server.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import torch

from portrait.errors import PortraitError
from portrait.pipeline import FaceEncoding

ENTRY_OVERHEAD = 1024  # bytes of Python objects around an entry's tensors and text (measured ~700)
FACE_TTL_SECONDS = 900.0
FACE_MEMORY_BYTES = 32 * 2**20


@dataclass(frozen=True)
class RememberedFace:
    """One photo's identity, as the generation needs it."""

    features: torch.Tensor  # (1, F) on the CPU
    embedding: torch.Tensor  # (1, E) on the CPU
    notice: str | None  # "Found 2 faces; using the largest one.", shown again with each generation
    photo_size: tuple[int, int]  # (width, height) as analysed, for the message

    @classmethod
    def of(cls, encoding: FaceEncoding, photo_size: tuple[int, int]) -> "RememberedFace":
        notice = encoding.analyses[0].notice if encoding.analyses else None
        features, embedding = (
            tensor.detach().to("cpu", copy=True) for tensor in (encoding.features, encoding.embedding)
        )
        return cls(features, embedding, notice, tuple(photo_size))

    def encoding(self) -> FaceEncoding:
        return FaceEncoding(features=self.features, embedding=self.embedding)

    @property
    def nbytes(self) -> int:
        return self.features.nbytes + self.embedding.nbytes + len(self.notice or "") + ENTRY_OVERHEAD


@dataclass(frozen=True)
class RefusedPhoto:
    """An upload that failed: the same upload asked for again fails the same way, never falls back to an older photo."""

    message: str

    @property
    def nbytes(self) -> int:
        return len(self.message) + ENTRY_OVERHEAD

    def error(self) -> PortraitError:
        return PortraitError(self.message)


Entry = RememberedFace | RefusedPhoto


class FaceMemory:
    """A server-wide, byte-capped, expiring map from an upload's name to what its photo gave."""

    def __init__(self, max_bytes: int = FACE_MEMORY_BYTES, ttl_seconds: float = FACE_TTL_SECONDS):
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self._entries: OrderedDict[str, tuple[float, Entry]] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, key: str, entry: Entry) -> None:
        with self._lock:
            self._drop(key)
            self._entries[key] = (time.monotonic(), entry)
            self._bytes += entry.nbytes
            self._expire()
            while self._bytes > self.max_bytes and self._entries:
                self._drop(next(iter(self._entries)))

    def get(self, key: str | None) -> Entry | None:
        """The entry, its lifetime renewed; None when there is none or it expired."""
        if key is None:
            return None
        with self._lock:
            self._expire()
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries[key] = (time.monotonic(), found[1])
            self._entries.move_to_end(key)
            return found[1]

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl_seconds
        while self._entries:
            key, (used, _) = next(iter(self._entries.items()))
            if used >= cutoff:
                break
            self._drop(key)

    def _drop(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self._bytes -= found[1].nbytes
