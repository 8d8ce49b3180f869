"""φ, the frozen identity encoder: the shallow feature that STEA fuses, and the embedding that measures identity.

Presets name the architectures the engine knows; the third-party checkpoints they load are plain
state dicts (`.pth`, loaded with weights_only=True). Saved with the pipeline, φ is a diffusers model
(config.json + safetensors) like every other component.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..defaults import DEFAULT_IDENTITY_ENCODER
from ..loading import resolve_weight_file
from ..weights import ARCFACE, CURRICULARFACE, WeightFile
from .iresnet import IResNet

logger = logging.getLogger(__name__)

FEATURE_LAYERS = ("stage1", "stage2", "stage3", "stage4", "embedding")


@dataclass(frozen=True)
class EncoderPreset:
    stage_units: tuple[int, ...]
    stage_channels: tuple[int, ...] = (64, 128, 256, 512)
    embedding_dim: int = 512
    se: bool = False
    weights: WeightFile | None = None
    input_size: int = 112  # side of the aligned crop the network reads; crops are resized to it


IDENTITY_ENCODERS = {
    # The paper's φ. Loads the original CurricularFace release and TFace's IR_101 alike.
    "curricularface_ir101": EncoderPreset(
        (3, 13, 30, 3),
        weights=CURRICULARFACE,
    ),
    "arcface_ir_se50": EncoderPreset((3, 4, 14, 3), se=True, weights=ARCFACE),
    # Random weights, for tests and the CPU preset: the real architecture at a fraction of the width.
    "tiny": EncoderPreset((1, 1, 1, 1), stage_channels=(8, 8, 16, 16), embedding_dim=32),
    # The learning experiment's φ: its faces are at most ~20 pixels tall, so a 32×32 crop holds all a 112×112 one would.
    "drawn": EncoderPreset((1, 1, 1, 1), stage_channels=(16, 16, 32, 32), embedding_dim=32, input_size=32),
}


@dataclass
class IdentityFeatures:
    features: torch.Tensor  # (B, feature_dim): what STEA fuses
    embedding: torch.Tensor  # (B, embedding_dim), L2-normalised: what identity is measured with


class IdentityEncoder(ModelMixin, ConfigMixin):
    """IR backbone on 112×112 aligned RGB crops in [0, 1]; normalises them to (x − 0.5) / 0.5 itself."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        architecture: str = DEFAULT_IDENTITY_ENCODER,
        feature_layer: str = "stage4",
        stage_units: tuple[int, ...] = (3, 13, 30, 3),
        stage_channels: tuple[int, ...] = (64, 128, 256, 512),
        embedding_dim: int = 512,
        se: bool = False,
        extra_bn: bool = False,
        output_bn_affine: bool = True,
        input_size: int = 112,
    ):
        super().__init__()
        if feature_layer not in FEATURE_LAYERS:
            raise ValueError(f"feature_layer must be one of {FEATURE_LAYERS}, got {feature_layer!r}")
        self.backbone = IResNet(stage_units, stage_channels, embedding_dim, se, extra_bn, output_bn_affine, input_size)

    @classmethod
    def from_preset(cls, architecture: str, feature_layer: str = "stage4", **overrides) -> "IdentityEncoder":
        """An encoder of a named architecture with freshly initialised weights."""
        if architecture not in IDENTITY_ENCODERS:
            raise ValueError(f"Unknown identity encoder {architecture!r}; choose one of {sorted(IDENTITY_ENCODERS)}")
        preset = IDENTITY_ENCODERS[architecture]
        return cls(
            architecture=architecture,
            feature_layer=feature_layer,
            stage_units=preset.stage_units,
            stage_channels=preset.stage_channels,
            embedding_dim=preset.embedding_dim,
            se=preset.se,
            input_size=preset.input_size,
            **overrides,
        ).eval()

    @classmethod
    def from_checkpoint(
        cls,
        architecture: str = DEFAULT_IDENTITY_ENCODER,
        feature_layer: str = "stage4",
        checkpoint: str | Path | None = None,
        weights_dir: str | Path | None = None,
    ) -> "IdentityEncoder":
        """Load a third-party state dict; `checkpoint` defaults to the preset's file in the weights folder.

        The variant (TFace's extra BatchNorm, affine output BatchNorm) is read off the checkpoint's keys.
        """
        preset = IDENTITY_ENCODERS.get(architecture)
        if checkpoint is None:
            if preset is None or preset.weights is None:
                raise ValueError(f"The {architecture!r} identity encoder has no checkpoint to load")
            checkpoint = resolve_weight_file(preset.weights, weights_dir)
        state = _plain_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        encoder = cls.from_preset(
            architecture,
            feature_layer,
            extra_bn="body.0.res_layer.5.running_mean" in state,
            output_bn_affine="output_layer.4.weight" in state,
        )
        encoder.backbone.load_state_dict(state, strict=True)
        logger.info("Loaded the %s identity encoder from %s", architecture, checkpoint)
        return encoder.eval()

    @property
    def feature_dim(self) -> int:
        if self.config.feature_layer == "embedding":
            return self.config.embedding_dim
        return self.config.stage_channels[int(self.config.feature_layer[-1]) - 1]

    def forward(self, aligned: torch.Tensor) -> IdentityFeatures:
        """aligned: (B, 3, 112, 112) RGB in [0, 1] (resized here when the network reads another size)."""
        size = self.config.input_size
        if aligned.shape[-1] != size:
            aligned = F.interpolate(aligned, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        stages, embedding = self.backbone.forward_stages((aligned - 0.5) / 0.5)
        embedding = F.normalize(embedding, dim=-1)
        if self.config.feature_layer == "embedding":
            features = embedding
        else:
            features = stages[int(self.config.feature_layer[-1]) - 1].mean(dim=(2, 3))
        return IdentityFeatures(features, embedding)


def _plain_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """Unwrap {'state_dict': ...} checkpoints and strip DataParallel/'backbone.' prefixes."""
    state = checkpoint.get("state_dict", checkpoint)
    return {key.removeprefix("module.").removeprefix("backbone."): value for key, value in state.items()}
