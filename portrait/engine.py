"""The one way to build a pipeline: a `ModelSource` says where the models come from, `load_pipeline` builds it.

The CLI, the app, training, evaluation and the benchmarks all describe their models with a
`ModelSource` and get their pipeline from `load_pipeline` (the CLI and the app through
`load_engine`, which adds the face analyser). A base is a hub id, a diffusers folder (a plain
Stable Diffusion or a saved PortraitBooth pipeline), or the name of a random-weight preset
(`tiny`, `drawn`, `sd15`; see portrait/presets.py). The offline demo (`--demo`, portrait/demo.py) is
such a saved pipeline: the drawn-people model in assets/demo/model.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .defaults import BASE_MODEL_ID, DEFAULT_DETECTOR, DETECTORS
from .demo import DEMO_MODEL, check_demo
from .errors import OptionError
from .face.analyzer import FaceAnalyzer
from .fastcomposer import HUB_ID as FASTCOMPOSER_HUB_ID
from .fastcomposer import LICENCE as FASTCOMPOSER_LICENCE
from .fastcomposer import is_fastcomposer, load_fastcomposer_pipeline
from .loading import WEIGHTS_DIR_ENV
from .pipeline import PortraitBoothPipeline
from .presets import PRESETS
from .runtime import DTYPES, pick_device, pick_dtype
from .safety import load_safety_checker, tiny_safety_checker

logger = logging.getLogger(__name__)

TINY = "tiny"
TINY_NOTICE = (
    "Running on untrained random models (tiny preset), so images are noise. "
    "For real portraits install the weights (README, 'Weights') and run without --tiny."
)
DEMO_NOTICE = (
    "Running the offline demo: a toy model of drawn people (assets/demo), trained on a CPU; it knows drawn "
    "people only. For real portraits install the weights (README, 'Weights')."
)


@dataclass(frozen=True)
class ModelSource:
    """Where every model of a pipeline comes from; `load_pipeline` builds what it describes.

    Args:
        base (`str`, defaults to SD 1.5's hub id):
            A hub id, a diffusers folder (plain Stable Diffusion or a saved PortraitBooth pipeline), or a
            random-weight preset name (`tiny`, `drawn`, `sd15`).
        portrait_weights (`Path`, *optional*):
            Trained PortraitBooth weights: a folder with `stea/` (and `unet/` or `unet_lora/`).
        identity_encoder (`str`, *optional*):
            φ's architecture for a plain SD base. Default: what the STEA names.
        feature_layer (`str`, *optional*):
            Which φ feature an untrained STEA fuses (trained weights name their own).
        identity_checkpoint (`Path`, *optional*):
            φ's third-party state dict. Default: the weights folder's file.
        weights_dir (`Path`, *optional*):
            Third-party weight files. Default: `$PORTRAIT_WEIGHTS_DIR`, else `./weights`.
        untrained_stea (`bool`, defaults to `False`):
            A zero-residual STEA, whatever the weights hold: exactly plain Stable Diffusion.
        identity_model (`str`, *optional*):
            FastComposer instead of PortraitBooth: `fastcomposer` (the hub's), its `.bin`, or a converted folder.
        safety_checker (`bool`, defaults to `True`):
            SD 1.5's safety checker (portrait/safety.py); off for research use only.
        watermark (`bool`, defaults to `True`):
            An invisible watermark in every picture (portrait/provenance.py); off for research use only.
        detector (`str`, defaults to `"auto"`):
            The face detector of `load_engine`: `auto`, `retinaface` or `mtcnn`.
        seed (`int`, defaults to 0):
            A preset's random weights.
        device (`str`, *optional*):
            Default: CUDA when present, else the CPU.
        dtype (`str`, *optional*):
            Default: fp16 on CUDA, fp32 on the CPU.
    """

    base: str = BASE_MODEL_ID
    portrait_weights: Path | None = None
    identity_encoder: str | None = None
    feature_layer: str | None = None
    identity_checkpoint: Path | None = None
    weights_dir: Path | None = None
    untrained_stea: bool = False
    identity_model: str | None = None
    safety_checker: bool = True
    watermark: bool = True
    detector: str = DEFAULT_DETECTOR
    seed: int = 0
    device: str | None = None
    dtype: str | None = None

    @property
    def is_preset(self) -> bool:
        return self.base in PRESETS


def load_pipeline(source: ModelSource) -> PortraitBoothPipeline:
    """The pipeline `source` describes, on its device and in its precision (the safety checker's included).

    Args:
        source (`ModelSource`):
            Where the base, the PortraitBooth (or FastComposer) weights, φ and the safety checker come from.

    Returns:
        `PortraitBoothPipeline`: with the safety checker and watermark `source` asks for; without a face analyser
        (`load_engine` adds one).

    Raises:
        `MissingWeightsError`: a model file is not on this machine (the message names it and where it goes).
        `OptionError`: settings that cannot go together (FastComposer with PortraitBooth weights).
    """
    if source.feature_layer is not None and not source.untrained_stea:
        raise ValueError("feature_layer chooses what a new, untrained STEA fuses; trained weights name their own")
    device = pick_device(source.device)
    dtype = pick_dtype(device, source.dtype)
    if source.identity_model is not None:
        if source.portrait_weights is not None or source.untrained_stea:
            raise OptionError(
                "--identity-model runs FastComposer; it cannot be combined with PortraitBooth weights or an untrained STEA"
            )
        pipe = load_fastcomposer_pipeline(source.base, source.identity_model, seed=source.seed, dtype=dtype)
    elif source.is_preset:
        pipe = PortraitBoothPipeline.from_random_preset(source.base, seed=source.seed)
        if source.portrait_weights is not None:
            pipe = pipe.with_portrait_weights(source.portrait_weights)
    else:
        pipe = PortraitBoothPipeline.from_pretrained(
            source.base,
            portrait_weights=source.portrait_weights,
            identity_encoder_name=source.identity_encoder,
            identity_checkpoint=source.identity_checkpoint,
            weights_dir=source.weights_dir,
            dtype=dtype,
        )
    if source.untrained_stea:
        pipe = pipe.with_untrained_stea(source.feature_layer)
    pipe = pipe.with_modules(**safety_modules(source))  # after the base, so that a missing base is said first
    pipe.watermark = source.watermark
    return pipe.to(device=device, dtype=dtype)  # the checker too: diffusers feeds it pixels in the pipeline's dtype


def safety_modules(source: ModelSource) -> dict:
    """The safety checker's two modules for `source`: SD 1.5's, a tiny random one for presets, or none."""
    if not source.safety_checker:
        return {"safety_checker": None, "feature_extractor": None}
    return tiny_safety_checker(source.seed) if source.is_preset else load_safety_checker(source.base)


def load_engine(source: ModelSource) -> PortraitBoothPipeline:
    """The pipeline with its face analyser: what the CLI and the app serve requests with."""
    pipe = load_pipeline(source)
    if source.base == TINY:
        logger.warning(TINY_NOTICE)
    logger.info(identity_model_line(pipe, source))
    if source.base == str(DEMO_MODEL):
        logger.warning(DEMO_NOTICE)
    pipe.face_analyzer = FaceAnalyzer.load(source.detector, weights_dir=source.weights_dir, device=pipe.device)
    return pipe


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model flags every command shares (with environment defaults for servers and Spaces)."""
    env = os.environ.get
    parser.add_argument(
        "--tiny", action="store_true", help="tiny untrained models: no weights, no network; makes noise"
    )
    parser.add_argument(
        "--demo", action="store_true", help="the offline demo: a toy model of drawn people (assets/demo), no network"
    )
    parser.add_argument(
        "--base", default=env("PORTRAIT_BASE", BASE_MODEL_ID), help="SD 1.5 hub id or folder ($PORTRAIT_BASE)"
    )
    parser.add_argument(
        "--portrait-weights",
        type=Path,
        default=env("PORTRAIT_WEIGHTS"),
        help="trained weights folder, stea/ unet/ ($PORTRAIT_WEIGHTS)",
    )
    parser.add_argument(
        "--identity-model", default=env("PORTRAIT_IDENTITY_MODEL"), metavar="fastcomposer|PATH",
        help="run FastComposer (MIT licence) instead of PortraitBooth: the hub checkpoint, its pytorch_model.bin, "
        "or a folder `portrait convert` wrote ($PORTRAIT_IDENTITY_MODEL)",
    )  # fmt: skip
    parser.add_argument("--identity-checkpoint", type=Path, help="identity encoder .pth (default: the weights folder)")
    parser.add_argument(
        "--weights-dir", type=Path, help=f"third-party weights folder (default ${WEIGHTS_DIR_ENV} or ./weights)"
    )
    parser.add_argument(
        "--device", default=env("PORTRAIT_DEVICE"), help="cuda, cuda:1, cpu (default: cuda when present)"
    )
    parser.add_argument(
        "--dtype", choices=list(DTYPES), default=env("PORTRAIT_DTYPE"), help="default fp16 on CUDA, fp32 on CPU"
    )
    parser.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR)
    parser.add_argument(
        "--no-safety-checker", action="store_true", help="research use only: flagged pictures are shown"
    )
    parser.add_argument(
        "--no-watermark", action="store_true", help="research use only: pictures carry no invisible watermark"
    )


def model_source(args: argparse.Namespace, **overrides) -> ModelSource:
    """The `ModelSource` of parsed model flags."""
    if args.demo:
        if args.tiny:
            raise OptionError("--tiny and --demo choose two different models: give one of them")
        check_demo()
        overrides = {**demo_settings(), **overrides}
    values = dict(
        base=TINY if args.tiny else args.base,
        portrait_weights=args.portrait_weights,
        identity_model=args.identity_model or None,  # an empty $PORTRAIT_IDENTITY_MODEL means PortraitBooth
        identity_checkpoint=args.identity_checkpoint,
        weights_dir=args.weights_dir,
        device=args.device,
        dtype=args.dtype,
        detector=args.detector,
        safety_checker=not args.no_safety_checker,
        watermark=not args.no_watermark,
    )
    return ModelSource(**{**values, **overrides})


def identity_model_line(pipe: PortraitBoothPipeline, source: ModelSource | None = None) -> str:
    """Which identity model runs and under what licence: for the app's banner and the CLI's log."""
    base = "Stable Diffusion 1.5 (CreativeML OpenRAIL-M)"
    if source is not None and source.is_preset:
        base = f"the {source.base} preset's toy models (no Stable Diffusion)"
    elif source is not None and source.base == str(DEMO_MODEL):
        base = "the offline demo's toy model of drawn people (no Stable Diffusion)"
    if is_fastcomposer(pipe):
        return f"Identity model: FastComposer ({FASTCOMPOSER_HUB_ID}, {FASTCOMPOSER_LICENCE} licence) on {base}"
    trained = "trained weights" if source is None or source.portrait_weights else "random weights"
    state = trained if pipe.stea.is_trained else "untrained STEA: pictures follow the prompt, not the face"
    return f"Identity model: PortraitBooth ({state}; code Apache-2.0) on {base}"


def demo_settings() -> dict:
    """What the offline demo changes in a `ModelSource`: its model, and no safety checker, since SD 1.5's
    comes with the SD download this mode exists without and the model draws only 16×16 cartoon faces."""
    return dict(base=str(DEMO_MODEL), portrait_weights=None, safety_checker=False)
