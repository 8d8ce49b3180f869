"""Where every model comes from: one place resolves hub ids, local folders and single weight files.

Offline-honest: a file that is here is used; a file that is missing is downloaded only when its host
answers within seconds; otherwise a `MissingWeightsError` names the file and the folder to put it in.
Nothing waits on an unreachable network.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import MissingWeightsError

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "PORTRAIT_WEIGHTS_DIR"
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
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
    """The weights folder: the argument, else $PORTRAIT_WEIGHTS_DIR, else `weights/` in the repository."""
    if weights_dir is not None:
        return Path(weights_dir).expanduser()
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or DEFAULT_WEIGHTS_DIR).expanduser()


@functools.lru_cache(maxsize=None)
def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """True when the URL's host accepts a TCP connection within `timeout` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be asked (offline mode set, or host unreachable)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or not host_reachable(_hub_endpoint())


def resolve_weight_file(weight: WeightFile, weights_dir: str | os.PathLike | None = None) -> Path:
    """Path of `weight` in the weights folder, downloading it there first when its host answers."""
    folder = weights_dir_or_default(weights_dir)
    path = folder / weight.filename
    if path.is_file():
        return path
    if weight.url and host_reachable(weight.url):
        from facexlib.utils import load_file_from_url

        folder.mkdir(parents=True, exist_ok=True)
        logger.info("Downloading %s to %s", weight.filename, folder)
        return Path(load_file_from_url(weight.url, model_dir=str(folder), progress=True, save_dir=str(folder)))
    source = f" (download: {weight.url})" if weight.url else ""
    raise MissingWeightsError(
        f"Missing weights for the {weight.description}: put {weight.filename} in {folder}{source}; "
        f"set {WEIGHTS_DIR_ENV} to use another folder"
    )


def resolve_pretrained(
    source: str | os.PathLike,
    what: str,
    required: tuple[str, ...] = BASE_MODEL_FILES,
    extra_patterns: tuple[str, ...] = ("tokenizer/*",),
) -> Path:
    """Local folder of a diffusers-format model given as a folder or a hub id.

    A hub id is looked up in the local Hugging Face cache first and downloaded only when the hub
    answers (the required files plus `extra_patterns`, e.g. tokenizer files whose names vary).
    Either way the folder must hold every `required` file.
    """
    path = Path(source).expanduser()
    from_hub = not path.is_dir()
    patterns = [*required, *extra_patterns]
    if from_hub:
        path = _hub_snapshot(str(source), what, patterns)
    missing = [name for name in required if not (path / name).is_file()]
    if missing and from_hub and not hub_offline():  # a partial cache, e.g. an interrupted download
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(str(source), allow_patterns=patterns))
        missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise MissingWeightsError(f"{what} folder {path} lacks: {', '.join(missing)}")
    return path


def _hub_snapshot(repo_id: str, what: str, patterns: list[str]) -> Path:
    if Path(repo_id).exists() or repo_id.count("/") != 1:
        raise MissingWeightsError(f"{what}: {repo_id} is neither a model folder nor a hub id (owner/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if hub_offline():
        raise MissingWeightsError(
            f"{what} {repo_id} is not in the Hugging Face cache and the hub cannot be reached: run "
            f"`hf download {repo_id}` where it can, copy the cache here, or pass a local folder"
        )
    logger.info("Downloading %s from the Hugging Face hub", repo_id)
    return Path(snapshot_download(repo_id, allow_patterns=patterns))
