"""Building a ready pipeline from user-facing options; shared by the CLI and the app."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .face.analyzer import FaceAnalyzer
from .loading import BASE_MODEL_ID
from .pipeline import PortraitBoothPipeline
from .runtime import pick_device, pick_dtype

logger = logging.getLogger(__name__)

TINY_NOTICE = (
    "Running on untrained random models (tiny preset), so images are noise. "
    "For real portraits install the weights (README, 'Weights') and run without --tiny."
)


@dataclass
class EngineOptions:
    random_preset: str | None = None  # "tiny" or "sd15": random weights instead of real ones
    base: str = BASE_MODEL_ID
    portrait_weights: Path | None = None
    identity_checkpoint: Path | None = None
    weights_dir: Path | None = None
    device: str | None = None
    dtype: str | None = None
    detector: str = "auto"
    seed: int = 0  # of the random preset's weights


def load_engine(options: EngineOptions) -> PortraitBoothPipeline:
    """The pipeline (with its face analyzer) on the chosen device and precision."""
    device = pick_device(options.device)
    dtype = pick_dtype(device, options.dtype)
    if options.random_preset:
        pipe = PortraitBoothPipeline.from_random_preset(options.random_preset, seed=options.seed)
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
        logger.warning(TINY_NOTICE)
    else:
        pipe = PortraitBoothPipeline.from_pretrained(
            options.base,
            portrait_weights=options.portrait_weights,
            identity_checkpoint=options.identity_checkpoint,
            weights_dir=options.weights_dir,
            torch_dtype=dtype,
        )
    pipe.to(device)
    pipe.face_analyzer = FaceAnalyzer.load(options.detector, weights_dir=options.weights_dir, device=device)
    return pipe
