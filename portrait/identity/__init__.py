"""φ: face-recognition backbones, the identity encoder built on them, and the CLIP stand-in of the ablation."""

from __future__ import annotations

from pathlib import Path

from .clip_features import ClipImageEncoder
from .encoder import DEFAULT_IDENTITY_ENCODER, IDENTITY_ENCODERS, IdentityEncoder, IdentityFeatures
from .iresnet import IResNet


def load_fusion_encoder(
    architecture: str = DEFAULT_IDENTITY_ENCODER,
    feature_layer: str = "stage4",
    checkpoint: str | Path | None = None,
    weights_dir: str | Path | None = None,
) -> IdentityEncoder | ClipImageEncoder:
    """The encoder a STEA config's `fusion_encoder` names: a face-recognition preset (φ), or CLIP image
    features (`clip_*`)."""
    if architecture.startswith("clip"):
        return ClipImageEncoder.load(architecture)
    return IdentityEncoder.from_checkpoint(architecture, feature_layer, checkpoint, weights_dir)


__all__ = [
    "ClipImageEncoder",
    "DEFAULT_IDENTITY_ENCODER",
    "IDENTITY_ENCODERS",
    "IResNet",
    "IdentityEncoder",
    "IdentityFeatures",
    "load_fusion_encoder",
]
