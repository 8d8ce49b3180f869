"""Where every model comes from: one place resolves hub ids, local folders and single weight files.

A file that is here is used. A hub model missing from the Hugging Face cache is fetched by
huggingface_hub, whose own offline mode and cache fall-back decide (HF_HUB_OFFLINE, a failed
connection); a third-party file (GitHub releases) is fetched only when that same offline mode is
off and its host answers within seconds, asked anew each time. Whatever cannot be had becomes a `MissingWeightsError` naming the
file and the folder to put it in.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub.constants

from .errors import MissingWeightsError

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "PORTRAIT_WEIGHTS_DIR"
BASE_MODEL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# What inference needs from a Stable Diffusion repository (no EMA copies, no .bin duplicates).
BASE_MODEL_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/tokenizer_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)


@dataclass(frozen=True)
class WeightFile:
    """A third-party weight file that lives in the weights folder."""

    filename: str
    description: str
    url: str | None = None  # where it can be downloaded from, when it can


_FACEXLIB_RELEASES = "https://github.com/xinntao/facexlib/releases/download"
FACEXLIB_WEIGHTS = {
    "retinaface": WeightFile(
        "detection_Resnet50_Final.pth", "RetinaFace face detector", f"{_FACEXLIB_RELEASES}/v0.1.0/detection_Resnet50_Final.pth"
    ),
    "bisenet": WeightFile(
        "parsing_bisenet.pth", "BiSeNet face parser", f"{_FACEXLIB_RELEASES}/v0.2.0/parsing_bisenet.pth"
    ),
    "arcface": WeightFile(
        "recognition_arcface_ir_se50.pth",
        "ArcFace IR-SE50 identity encoder",
        f"{_FACEXLIB_RELEASES}/v0.1.0/recognition_arcface_ir_se50.pth",
    ),
}


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
        from facexlib.utils import load_file_from_url

        folder.mkdir(parents=True, exist_ok=True)
        logger.info("Downloading %s to %s", weight.filename, folder)
        return Path(load_file_from_url(weight.url, model_dir=str(folder), progress=True, save_dir=str(folder)))
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
        path = _hub_folder(str(source), what, required, [*required, *extra_patterns])
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise MissingWeightsError(f"{what} folder {path} lacks: {', '.join(missing)}")
    return path


def _hub_folder(repo_id: str, what: str, required: tuple[str, ...], patterns: list[str]) -> Path:
    if Path(repo_id).exists() or repo_id.count("/") != 1:
        raise MissingWeightsError(f"{what}: {repo_id} is neither a model folder nor a hub id (owner/name)")
    import httpx
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        cached = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
        if all((cached / name).is_file() for name in required):
            return cached
    except LocalEntryNotFoundError:
        pass
    try:
        logger.info("Fetching %s from the Hugging Face hub", repo_id)
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, httpx.HTTPError, OSError) as error:
        raise MissingWeightsError(
            f"{what} {repo_id} is not in the Hugging Face cache and could not be downloaded "
            f"({type(error).__name__}): run `hf download {repo_id}` where the hub can be reached and copy the "
            "cache here, or pass a local folder"
        ) from error
