"""FastComposer's fusion of a face into the text condition: the second fusion module beside STEA.

FastComposer (Xiao et al. 2023, MIT licence) fuses, at the word that names a person, that word's text
feature t (the CLIP text encoder's output) with the CLIP image embedding o of the person's reference:

    x = MLP₁(t ‖ o) + t          MLP₁: LayerNorm → Linear(2D→D) → GELU → Linear(D→D), no residual of its own
    x = MLP₂(x) + x              MLP₂: LayerNorm → Linear(D→D) → GELU → Linear(D→D)
    c = LayerNorm(x)

Every other token keeps its text feature. The module has the call surface of `STEA` (text features,
token index per sample, identity feature per sample), so the pipeline, two-people mode and evaluation use
either; its parameter names are FastComposer's, so their `postfuse_module.*` keys load one to one.
See docs/method.md, "FastComposer".
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .prompts import EMOTION_WORDS, IDENTITY_WORDS
from .stea import FusionEncoderConfig, replace_tokens

FASTCOMPOSER_ENCODER = "fastcomposer_clip_vit_l14"  # the encoder it fuses: CLIP image embedding of a face crop
DEMO_ALPHA = 0.75  # their Gradio demo's default share of the steps that carry the face


class PostfuseMLP(nn.Module):
    """LayerNorm → Linear → GELU → Linear, with the input added back when `residual`."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, residual: bool):
        super().__init__()
        if residual and in_dim != out_dim:
            raise ValueError(f"A residual MLP needs equal input and output widths, got {in_dim} and {out_dim}")
        self.residual = residual
        self.layernorm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act_fn = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(self.act_fn(self.fc1(self.layernorm(x))))
        return out + x if self.residual else out


class FastComposerFusion(FusionEncoderConfig, ModelMixin, ConfigMixin):
    config_name = "config.json"
    default_people_mode = "one-pass"  # FastComposer puts every face into one prompt and one UNet pass

    @register_to_config
    def __init__(
        self,
        text_dim: int = 768,
        identity_dim: int = 768,
        fusion_encoder: str = FASTCOMPOSER_ENCODER,
        feature_layer: str = "embedding",
        alpha: float = DEMO_ALPHA,
        identity_words: tuple[str, ...] = IDENTITY_WORDS,
        emotion_words: tuple[str, ...] = EMOTION_WORDS,
    ):
        super().__init__()
        if identity_dim != text_dim:
            raise ValueError(f"FastComposer fuses equal widths: text {text_dim}, image embedding {identity_dim}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha is a share of the steps, between 0 and 1; got {alpha}")
        self.mlp1 = PostfuseMLP(2 * text_dim, text_dim, text_dim, residual=False)
        self.mlp2 = PostfuseMLP(text_dim, text_dim, text_dim, residual=True)
        self.layer_norm = nn.LayerNorm(text_dim)

    @property
    def is_trained(self) -> bool:
        """Always: FastComposer's fusion only exists as loaded from its checkpoint (it has no neutral start)."""
        return True

    def default_identity_start(self, num_inference_steps: int) -> float:
        """Their delayed subject conditioning as our identity start: they use the plain prompt while the step
        index i ≤ (1 − α)·N, i.e. for ⌊(1 − α)·N⌋ + 1 steps (13 of 50 at their demo's α = 0.75)."""
        steps = max(num_inference_steps, 1)  # a step count below 1 is refused later, with a sentence
        plain_steps = min(math.floor((1.0 - self.config.alpha) * steps) + 1, steps)
        return plain_steps / steps

    def fuse(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The fused feature of marked words: text (…, D), image (…, D) → (…, D)."""
        x = self.mlp1(torch.cat([text, image.to(text)], dim=-1)) + text
        return self.layer_norm(self.mlp2(x))

    def forward(
        self, text_embeds: torch.Tensor, token_index: torch.Tensor, identity_features: torch.Tensor
    ) -> torch.Tensor:
        """text_embeds (B, L, D); token_index (B,) the marked token per sample or NO_IDENTITY; identity_features
        (B, D) CLIP image embeddings. Returns (B, L, D) with only the marked tokens changed."""
        return replace_tokens(text_embeds, token_index, lambda tokens: self.fuse(tokens, identity_features))


__all__ = ["DEMO_ALPHA", "FASTCOMPOSER_ENCODER", "FastComposerFusion", "PostfuseMLP"]
