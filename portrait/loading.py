"""Where every model comes from: one place resolves hub ids, local folders and single weight files.

What exists and where it comes from is portrait/weights.py; this module finds it. A file that is
here is used. A hub model missing from the Hugging Face cache is fetched by huggingface_hub, whose own
offline mode and cache fall-back decide (HF_HUB_OFFLINE, a failed connection); a third-party file
(GitHub releases) is fetched by portrait/download.py (resumable, checked) only when that same offline
mode is off and its host answers within seconds, asked anew each time. Whatever cannot be had becomes a
`MissingWeightsError` naming the file and the folder to put it in.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub.constants

from .download import download
from .errors import MissingWeightsError
from .weights import FACEXLIB_WEIGHTS, SD15, HubModel, WeightFile

__all__ = ["BASE_MODEL_FILES", "FACEXLIB_WEIGHTS", "WeightFile"]  # re-exported from the registry

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "PORTRAIT_WEIGHTS_DIR"
BASE_MODEL_FILES = SD15.required


def weights_dir_or_default(weights_dir: str | os.PathLike | None = None) -> Path:
    """The weights folder: the argument, else $PORTRAIT_WEIGHTS_DIR, else `weights/` in the working folder."""
    if weights_dir is not None:
        return Path(weights_dir).expanduser().absolute()
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or Path.cwd() / "weights").expanduser().absolute()


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """True when the URL's host accepts a TCP connection within `timeout` seconds (asked every time)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_weight_file(weight: WeightFile, weights_dir: str | os.PathLike | None = None) -> Path:
    """Path of `weight` in the weights folder, downloading it there first when its host answers."""
    folder = weights_dir_or_default(weights_dir)
    path = folder / weight.filename
    if path.is_file():
        return path
    if weight.url and not huggingface_hub.constants.HF_HUB_OFFLINE and host_reachable(weight.url):
        logger.info("Downloading %s to %s", weight.filename, folder)
        return download(weight.url, path, weight.size, weight.sha256)
    source = f" (download: {weight.url})" if weight.url else ""
    raise MissingWeightsError(
        f"Missing weights for the {weight.description}: put {weight.filename} in {folder}{source}; "
        f"--weights-dir or ${WEIGHTS_DIR_ENV} choose another folder"
    )


def resolve_pretrained(
    source: str | os.PathLike,
    what: str,
    required: tuple[str, ...] = BASE_MODEL_FILES,
    extra_patterns: tuple[str, ...] = ("tokenizer/*",),
) -> Path:
    """Local folder of a diffusers-format model given as a folder or a hub id.

    A hub id is looked up in the local Hugging Face cache first and fetched only when the cache lacks
    a `required` file (with `extra_patterns`, e.g. tokenizer files whose names vary). Either way the
    folder must hold every `required` file.
    """
    path = Path(source).expanduser()
    if not path.is_dir():
        path = _hub_folder(HubModel(str(source), required, extra_patterns), what)
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise MissingWeightsError(f"{what} folder {path} lacks: {', '.join(missing)}")
    return path


def resolve_model(model: HubModel, what: str, source: str | os.PathLike | None = None) -> Path:
    """Local folder of a registry model: from the cache or the hub, or `source` (a folder or another hub
    id holding the same files)."""
    return resolve_pretrained(source or model.repo_id, what, model.required, model.extra_patterns)


def _hub_folder(model: HubModel, what: str) -> Path:
    if Path(model.repo_id).exists() or model.repo_id.count("/") != 1:
        raise MissingWeightsError(f"{what}: {model.repo_id} is neither a model folder nor a hub id (owner/name)")
    return cached_hub_folder(model) or fetch_hub_model(model, what)


def cached_hub_folder(model: HubModel) -> Path | None:
    """The Hugging Face cache's folder of `model` when it holds every required file, else None (no network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        cached = Path(snapshot_download(model.repo_id, allow_patterns=model.patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    return cached if all((cached / name).is_file() for name in model.required) else None


def fetch_hub_model(model: HubModel, what: str) -> Path:
    """Download the files of `model` the project needs into the Hugging Face cache (huggingface_hub's
    progress bars and offline mode); its folder, or a `MissingWeightsError` saying what to do."""
    import httpx
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        logger.info("Fetching %s from the Hugging Face hub", model.repo_id)
        return Path(snapshot_download(model.repo_id, allow_patterns=model.patterns))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, httpx.HTTPError, OSError) as error:
        raise MissingWeightsError(
            f"{what} {model.repo_id} is not in the Hugging Face cache and could not be downloaded "
            f"({type(error).__name__}): run `hf download {model.repo_id}` where the hub can be reached and copy "
            f"the cache ({huggingface_hub.constants.HF_HUB_CACHE}) here, or pass a local folder"
        ) from error
