"""STEA: subject-text embedding augmentation (paper eq. 4).

c_i = ψ(w_i) for every token except the identity token, where
c_i = ψ(w_i) + MLP(LayerNorm([ψ(w_i) ‖ φ(f)])).
The last Linear starts at zero, so an untrained STEA returns the text condition unchanged and the
pipeline is exactly Stable Diffusion. Its config doubles as the PortraitBooth weights' description:
which encoder's feature it fuses (`fusion_encoder`: φ, or CLIP in the w/o-STEA ablation) and which
layer of it, and its identity and emotion words.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .defaults import DEFAULT_IDENTITY_ENCODER
from .prompts import EMOTION_WORDS, IDENTITY_WORDS

NO_IDENTITY = -1  # token index of a sample that gets no face (text-only / unconditional)


class FusionEncoderConfig:
    """Reads configs saved when `fusion_encoder` was called `identity_encoder` (STEA's and FastComposer's fusion)."""

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        if "identity_encoder" in config_dict and "fusion_encoder" not in config_dict:
            config_dict = {
                ("fusion_encoder" if key == "identity_encoder" else key): value for key, value in config_dict.items()
            }
        return super().extract_init_dict(config_dict, **kwargs)


class STEA(FusionEncoderConfig, ModelMixin, ConfigMixin):
    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        text_dim: int = 768,
        identity_dim: int = 512,
        hidden_dim: int = 768,
        fusion_encoder: str = DEFAULT_IDENTITY_ENCODER,
        feature_layer: str = "stage4",
        identity_words: tuple[str, ...] = IDENTITY_WORDS,
        emotion_words: tuple[str, ...] = EMOTION_WORDS,
    ):
        super().__init__()
        self.norm = nn.LayerNorm(text_dim + identity_dim)
        self.fc1 = nn.Linear(text_dim + identity_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, text_dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    @property
    def is_trained(self) -> bool:
        """False while the residual is still zero, i.e. while STEA cannot change any image."""
        return bool(self.fc2.weight.detach().any() or self.fc2.bias.detach().any())

    default_people_mode = "regions"  # several people: MultiDiffusion regions, the paper's way (portrait/multi.py)

    def default_identity_start(self, num_inference_steps: int) -> float:
        """The paper adds the face from the first step."""
        return 0.0

    def forward(
        self, text_embeds: torch.Tensor, token_index: torch.Tensor, identity_features: torch.Tensor
    ) -> torch.Tensor:
        """Augment the identity token of each sample.

        text_embeds: (B, L, D) text-encoder output ψ(w); token_index: (B,) long, the identity token
        position per sample or NO_IDENTITY; identity_features: (B, F) φ(f). Returns (B, L, D).
        """

        def augmented(tokens: torch.Tensor) -> torch.Tensor:
            fused = torch.cat([tokens, identity_features.to(tokens)], dim=-1)
            return tokens + self.fc2(self.act(self.fc1(self.norm(fused))))

        return replace_tokens(text_embeds, token_index, augmented)


def replace_tokens(
    text_embeds: torch.Tensor, token_index: torch.Tensor, fused: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """`text_embeds` (B, L, D) with each sample's token at `token_index` (B,) replaced by `fused` of the (B, D)
    tokens there; samples whose index is NO_IDENTITY keep theirs. STEA and FastComposer's fusion share it."""
    batch = torch.arange(text_embeds.shape[0], device=text_embeds.device)
    has_face = token_index.to(text_embeds.device) != NO_IDENTITY
    index = token_index.clamp(min=0).to(text_embeds.device)
    tokens = text_embeds[batch, index]  # (B, D)
    replacement = torch.where(has_face[:, None], fused(tokens), tokens)
    out = text_embeds.clone()
    out[batch, index] = replacement
    return out
