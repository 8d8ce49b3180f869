"""Building a ready pipeline from user-facing options; shared by the CLI and the app."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .face.analyzer import FaceAnalyzer
from .loading import BASE_MODEL_ID, WEIGHTS_DIR_ENV
from .pipeline import PortraitBoothPipeline
from .runtime import DTYPES, pick_device, pick_dtype

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


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The model flags the CLI and the app share (with environment defaults for servers and Spaces)."""
    env = os.environ.get
    parser.add_argument("--tiny", action="store_true", help="tiny untrained models: no weights, no network; makes noise")
    parser.add_argument("--base", default=env("PORTRAIT_BASE", BASE_MODEL_ID), help="SD 1.5 hub id or folder ($PORTRAIT_BASE)")
    parser.add_argument(
        "--portrait-weights", type=Path, default=env("PORTRAIT_WEIGHTS"), help="trained weights folder, stea/ unet/ ($PORTRAIT_WEIGHTS)"
    )
    parser.add_argument("--identity-checkpoint", type=Path, help="identity encoder .pth (default: the weights folder)")
    parser.add_argument("--weights-dir", type=Path, help=f"third-party weights folder (default ${WEIGHTS_DIR_ENV} or weights/)")
    parser.add_argument("--device", default=env("PORTRAIT_DEVICE"), help="cuda, cuda:1, cpu (default: cuda when present)")
    parser.add_argument("--dtype", choices=list(DTYPES), default=env("PORTRAIT_DTYPE"), help="default fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--detector", choices=["auto", "retinaface", "mtcnn"], default="auto")


def engine_options(args: argparse.Namespace) -> EngineOptions:
    return EngineOptions(
        random_preset="tiny" if args.tiny else None,
        base=args.base,
        portrait_weights=args.portrait_weights,
        identity_checkpoint=args.identity_checkpoint,
        weights_dir=args.weights_dir,
        device=args.device,
        dtype=args.dtype,
        detector=args.detector,
    )


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
