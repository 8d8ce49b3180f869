"""One downloader for every weight file that is not on the hub: resumable, checked, never half-written.

Bytes go to `NAME.part` beside the destination. An interrupted download (a kill, a dropped connection)
leaves that file, and the next attempt asks the server for the rest with an HTTP Range request. When
the bytes are all there, their size and sha256 are checked (where known) and only then is the file
renamed to its name, so a reader finds the whole file or none. A file that fails its check is removed
with its partial, so the next attempt starts clean.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .errors import MissingWeightsError

CHUNK = 1 << 20
USER_AGENT = "portraitbooth-weights"


def download(
    url: str, path: str | os.PathLike, size: int | None = None, sha256: str | None = None, timeout: float = 30.0
) -> Path:
    """`url` into `path`, resuming `path.part` if an earlier attempt left one; checked, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(path)
    if size is not None and part.is_file() and part.stat().st_size > size:
        part.unlink()  # longer than the file can be: not a prefix of it
    try:
        _fetch_rest(url, part, size, timeout, path.name)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        kept = f"; {part.name} keeps {part.stat().st_size} bytes, rerun to resume" if part.is_file() else ""
        raise MissingWeightsError(f"Could not download {url} ({_reason(error)}){kept}") from error
    _check(part, size, sha256, url)
    os.replace(part, path)
    return path


def partial_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.part")


def _fetch_rest(url: str, part: Path, size: int | None, timeout: float, label: str) -> None:
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have == size:
        return  # complete already; only the check and the rename were missing
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={have}-"} if have else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not have:  # 416: nothing after `have`; the partial may already be whole
            raise
        return
    with response:
        resumed = have and response.status == 206 and _range_start(response) == have
        if not resumed:
            have = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else size
        received = 0
        with (
            open(part, "ab" if resumed else "wb") as out,
            tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=label) as bar,
        ):
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                received += len(block)
                bar.update(len(block))
    if length is not None and received < int(length):  # http.client ends a cut-off body quietly
        raise ConnectionError(f"the connection closed after {received} of {length} bytes")


def _range_start(response) -> int | None:
    """The first byte a 206 answer holds, from `Content-Range: bytes START-END/TOTAL`."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _check(part: Path, size: int | None, sha256: str | None, url: str) -> None:
    got = part.stat().st_size
    if size is not None and got != size:
        problem = f"{got} bytes instead of {size}"
    elif sha256 is not None and (digest := file_sha256(part)) != sha256:
        problem = f"sha256 {digest} instead of {sha256}"
    else:
        return
    part.unlink()
    raise MissingWeightsError(f"The download of {url} is not the expected file ({problem}); it was removed")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__
