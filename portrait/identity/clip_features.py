"""CLIP image features of the aligned face, in place of φ: the paper's "w/o STEA" ablation.

It has the identity encoder's interface (aligned 112×112 crops in [0, 1] → features and a normalised
embedding), so STEA, the pipeline and training use it unchanged. The face-recognition network still
measures identity for the DIP loss; only what STEA fuses changes.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from ..loading import resolve_model
from ..weights import CLIP_VIT_L14
from .encoder import IdentityFeatures

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                   patch_size=8, projection_dim=32)  # fmt: skip


class ClipImageEncoder(ModelMixin, ConfigMixin):
    config_name = "config.json"

    @register_to_config
    def __init__(
        self, architecture: str = "clip_vit_l14", vision_config: dict | None = None, feature_layer: str = "embedding"
    ):
        super().__init__()
        self.vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**(vision_config or {})))

    @classmethod
    def load(cls, architecture: str) -> "ClipImageEncoder":
        """`clip_vit_l14` from the hub cache or download; `clip_tiny` with random weights (tests)."""
        if architecture == "clip_tiny":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the same random weights every time, as the other presets
                return cls(architecture, TINY_VISION).eval()
        folder = resolve_model(CLIP_VIT_L14, "CLIP ViT-L/14")
        pretrained = CLIPVisionModelWithProjection.from_pretrained(Path(folder))
        encoder = cls(architecture, pretrained.config.to_dict())
        encoder.vision.load_state_dict(pretrained.state_dict())
        return encoder.eval()

    @property
    def feature_dim(self) -> int:
        return self.vision.config.projection_dim

    def forward(self, aligned: torch.Tensor) -> IdentityFeatures:
        """aligned: (B, 3, H, W) RGB in [0, 1], resized to the model's input size unless already there."""
        size = self.vision.config.image_size
        pixels = aligned
        if pixels.shape[-2:] != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        features = self.vision(pixel_values=(pixels - mean) / std).image_embeds
        return IdentityFeatures(features, F.normalize(features, dim=-1))
