"""PortraitBooth weights: loading and saving them, as a mixin of the pipeline (diffusers' IPAdapterMixin pattern).

A PortraitBooth weights folder, as training (train/checkpoints.py) and `save_portrait_weights` write it:

    stea/              the trained STEA (always)
    unet/              the fine-tuned UNet, or
    unet_lora/         its LoRA (diffusers' format), fused into the base UNet on loading
    fusion_encoder/    the encoder STEA fuses, only when training changed it (the w/o-STEA ablation's CLIP)

A whole saved pipeline (`save_pretrained`) holds `fusion_encoder/` always. Folders saved before it had that
name call it `identity_encoder/` (also in model_index.json); they load as they are (`fusion_folder`, `load_config`).

`from_pretrained` loads a base with such a folder on top (or a saved whole pipeline); `with_portrait_weights`
puts one onto modules already loaded (random presets). portrait/engine.py's `load_pipeline` calls both.
"""

from __future__ import annotations

import copy as pycopy
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

from .defaults import BASE_MODEL_ID, DEFAULT_IDENTITY_ENCODER
from .errors import MissingWeightsError
from .identity import ClipImageEncoder, load_fusion_encoder
from .identity.encoder import IdentityEncoder
from .identity.fastcomposer_image import FastComposerImageEncoder
from .loading import resolve_pretrained
from .stea import STEA

if TYPE_CHECKING:
    from .pipeline import PortraitBoothPipeline

logger = logging.getLogger(__name__)

STEA_FOLDER, UNET_FOLDER, FUSION_FOLDER = "stea", "unet", "fusion_encoder"
LEGACY_FUSION_FOLDER = "identity_encoder"  # FUSION_FOLDER's name in folders saved before it was renamed
# A UNet trained as a LoRA (train/memory.py): diffusers' LoRA file, fused into the base UNet on loading.
UNET_LORA_FOLDER, LORA_FILE = "unet_lora", "pytorch_lora_weights.safetensors"


class PortraitWeightsMixin:
    """Loading and saving PortraitBooth weights; mixed into `PortraitBoothPipeline` (a `StableDiffusionPipeline`)."""

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike = BASE_MODEL_ID,
        portrait_weights: str | os.PathLike | None = None,
        identity_encoder_name: str | None = None,
        identity_checkpoint: str | os.PathLike | None = None,
        weights_dir: str | os.PathLike | None = None,
        **kwargs,
    ) -> "PortraitBoothPipeline":
        """Load a base Stable Diffusion (hub id or folder) or a saved PortraitBooth pipeline.

        portrait_weights: folder with `stea/` (and usually `unet/`), as written by training or by
            `save_portrait_weights`/`save_pretrained`. Without it, a plain SD base gets an untrained
            STEA, which leaves every image exactly as plain Stable Diffusion would make it.
        identity_encoder_name: φ's architecture for an untrained STEA on a plain SD base (default
            CurricularFace IR-101); trained weights name their own.
        identity_checkpoint: φ's third-party state dict; default the architecture's file in the weights folder.
        Other keyword arguments go to `DiffusionPipeline.from_pretrained` (dtype, scheduler, ...).
        """
        base = resolve_pretrained(pretrained_model_name_or_path, "Base model")
        is_portrait_folder = (base / STEA_FOLDER).is_dir()
        dtype = kwargs.get("dtype")
        if portrait_weights is not None:
            kwargs = {**portrait_modules(Path(portrait_weights), dtype), **kwargs}
        if not is_portrait_folder:
            if "stea" not in kwargs:  # built only when no trained one came
                kwargs["stea"] = _untrained_stea(base, identity_encoder_name or DEFAULT_IDENTITY_ENCODER)
            kwargs.setdefault("safety_checker", None)  # not part of the paper's recipe; not downloaded
            kwargs.setdefault("feature_extractor", None)
            kwargs.setdefault("requires_safety_checker", False)
        if "stea" in kwargs and "fusion_encoder" not in kwargs:
            folder = fusion_folder(base) if is_portrait_folder else None
            kwargs["fusion_encoder"] = _fusion_encoder_for(
                kwargs["stea"], folder, identity_checkpoint, weights_dir, dtype
            )
        if is_portrait_folder and "fusion_encoder" not in kwargs and fusion_folder(base).name == LEGACY_FUSION_FOLDER:
            kwargs["fusion_encoder"] = _saved_encoder(
                fusion_folder(base), dtype
            )  # diffusers would look in fusion_encoder/
        pipe = super().from_pretrained(base, **kwargs)
        if portrait_weights is not None and (Path(portrait_weights) / UNET_LORA_FOLDER).is_dir():
            fuse_unet_lora(pipe.unet, Path(portrait_weights))  # a UNet of its own, just loaded
        if not is_portrait_folder and "scheduler" not in kwargs:
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        if not pipe.stea.is_trained:
            logger.warning("STEA is untrained: images will not carry the reference identity (plain Stable Diffusion).")
        return pipe

    @classmethod
    def load_config(cls, *args, **kwargs):
        """diffusers' reading of a config; a model_index.json saved before `fusion_encoder` had that name says
        `identity_encoder`: read as `fusion_encoder`, which `from_pretrained` loads from the old folder."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if LEGACY_FUSION_FOLDER in config:
            config.setdefault("fusion_encoder", config.pop(LEGACY_FUSION_FOLDER))
        return loaded

    def with_portrait_weights(self, folder: str | os.PathLike) -> "PortraitBoothPipeline":
        """These modules with trained STEA (and UNet) weights from `folder`, φ set to the feature STEA fuses."""
        modules = portrait_modules(Path(folder), self.unet.dtype)
        if (Path(folder) / UNET_LORA_FOLDER).is_dir():  # fused into a copy: this pipeline's UNet stays as it is
            modules["unet"] = fuse_unet_lora(modules.get("unet") or pycopy.deepcopy(self.unet), Path(folder))
        if "fusion_encoder" not in modules:
            stea = modules["stea"]
            modules["fusion_encoder"] = _matching(self.fusion_encoder, stea) or _fusion_encoder_for(
                stea, None, None, None, None
            )
        return self.with_modules(**modules).to(self.device)

    def with_untrained_stea(self, feature_layer: str | None = None) -> "PortraitBoothPipeline":
        """A zero-residual STEA (exactly plain Stable Diffusion) fusing φ's `feature_layer` (default: as now)."""
        encoder = _with_feature_layer(self.fusion_encoder, feature_layer or self.stea.config.feature_layer)
        stea = STEA.from_config(
            self.stea.config, identity_dim=encoder.feature_dim, feature_layer=encoder.config.feature_layer
        )
        return self.with_modules(stea=stea.to(self.device, self.stea.dtype), fusion_encoder=encoder)

    def save_portrait_weights(self, folder: str | os.PathLike) -> None:
        """Write what PortraitBooth training changes (UNet and STEA), as safetensors with their configs."""
        for model in (self.unet, self.stea):
            model.save_pretrained(Path(folder) / part_folder(model))


def part_folder(model: torch.nn.Module) -> str:
    """The folder of a PortraitBooth weights folder that holds `model` (training's checkpoints use the same)."""
    if isinstance(model, STEA):
        return STEA_FOLDER
    return UNET_FOLDER if isinstance(model, UNet2DConditionModel) else FUSION_FOLDER


def portrait_modules(folder: Path, dtype: torch.dtype | None = None) -> dict:
    """The trained STEA of a PortraitBooth weights folder, and its UNet and fused encoder when it holds them
    (the encoder only when training changed it, as the w/o-STEA ablation's CLIP)."""
    if not (folder / STEA_FOLDER).is_dir():
        raise MissingWeightsError(f"{folder} holds no {STEA_FOLDER}/ folder: not PortraitBooth weights")
    modules = {"stea": STEA.from_pretrained(folder / STEA_FOLDER, dtype=dtype)}
    if (folder / UNET_FOLDER).is_dir():
        modules["unet"] = UNet2DConditionModel.from_pretrained(folder / UNET_FOLDER, dtype=dtype)
    if fusion_folder(folder).is_dir():
        modules["fusion_encoder"] = _saved_encoder(fusion_folder(folder), dtype)
    return modules


def fusion_folder(folder: Path) -> Path:
    """Where `folder` (weights or a saved pipeline) keeps the encoder STEA fuses: `fusion_encoder/`, or
    `identity_encoder/` in a folder saved before that name."""
    legacy = folder / LEGACY_FUSION_FOLDER
    return legacy if legacy.is_dir() and not (folder / FUSION_FOLDER).is_dir() else folder / FUSION_FOLDER


def fuse_unet_lora(unet: UNet2DConditionModel, folder: Path) -> UNet2DConditionModel:
    """`unet` with the LoRA of `folder/unet_lora/` fused into its weights (changed in place, returned)."""
    try:
        unet.load_lora_adapter(
            str(folder / UNET_LORA_FOLDER), weight_name=LORA_FILE, prefix="unet", adapter_name="portraitbooth"
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise MissingWeightsError(f"{folder / UNET_LORA_FOLDER} holds no LoRA for this UNet: {error}") from None
    unet.fuse_lora(adapter_names=["portraitbooth"])
    unet.unload_lora()  # the fused weights stay; the LoRA layers go, so it is a plain UNet again
    return unet


def _saved_encoder(folder: Path, dtype: torch.dtype | None) -> IdentityEncoder | ClipImageEncoder:
    """A saved encoder folder, loaded as the class it was saved from (φ or the trained CLIP)."""
    kind = json.loads((folder / "config.json").read_text())["_class_name"]
    encoder_class = {
        "IdentityEncoder": IdentityEncoder,
        "ClipImageEncoder": ClipImageEncoder,
        "FastComposerImageEncoder": FastComposerImageEncoder,
    }[kind]
    return encoder_class.from_pretrained(folder, dtype=dtype).eval()


def _fusion_encoder_for(
    stea: STEA, folder: Path | None, checkpoint, weights_dir, dtype
) -> IdentityEncoder | ClipImageEncoder:
    """The encoder `stea` was trained with: the saved pipeline's own (`folder`) when it is that
    architecture, else loaded by its name (third-party checkpoint, or CLIP); set to the feature STEA fuses."""
    config = stea.config
    if (
        folder is not None
        and json.loads((folder / "config.json").read_text()).get("architecture") == config.fusion_encoder
    ):
        return _matching(_saved_encoder(folder, dtype), stea)
    encoder = load_fusion_encoder(config.fusion_encoder, config.feature_layer, checkpoint, weights_dir)
    return encoder.to(dtype) if dtype else encoder


def _matching(encoder, stea: STEA):
    """`encoder` giving the feature `stea` fuses, when it is the architecture `stea` was trained with; else None."""
    if encoder.config.architecture != stea.config.fusion_encoder:
        return None
    return _with_feature_layer(encoder, stea.config.feature_layer)


def _with_feature_layer(encoder, layer: str):
    """`encoder` (sharing its weights) giving `layer` as its STEA feature; CLIP features have one layer only."""
    if not isinstance(encoder, IdentityEncoder) or encoder.config.feature_layer == layer:
        return encoder
    copy = pycopy.copy(encoder)  # its own config; the parameters stay shared
    copy.register_to_config(feature_layer=layer)
    return copy


def _untrained_stea(base: Path, identity_encoder: str) -> STEA:
    """A zero-residual STEA sized for the base model's text encoder and `identity_encoder`'s default feature."""
    from transformers import CLIPTextConfig

    from .identity.encoder import IDENTITY_ENCODERS

    text_dim = CLIPTextConfig.from_pretrained(base / "text_encoder").hidden_size
    preset = IDENTITY_ENCODERS[identity_encoder]
    return STEA(
        text_dim=text_dim, identity_dim=preset.stage_channels[-1], hidden_dim=text_dim, fusion_encoder=identity_encoder
    )
