"""A FastComposer checkpoint at tiny sizes, with the key layout of their `FastComposerModel` state dict.

Written here from their module layout (attribute names only), not from their code: a module whose
children are `unet`, `vae`, `text_encoder` (embeddings, encoder, final_layer_norm), `image_encoder`
(vision_model, visual_projection) and `postfuse_module` (mlp1, mlp2 — each layernorm, fc1, fc2 — and
layer_norm), built from tiny diffusers/transformers models with random weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from portrait.identity.clip_features import TINY_VISION
from portrait.presets import build_random_components


def _mlp(in_dim: int, out_dim: int, hidden: int) -> nn.Module:
    mlp = nn.Module()
    mlp.layernorm, mlp.fc1, mlp.fc2 = nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.Linear(hidden, out_dim)
    return mlp


def their_layout(seed: int = 1, extra_token_row: bool = False) -> nn.Module:
    """A module tree whose state dict has FastComposer's keys, fitting the `tiny` preset's base."""
    components = build_random_components("tiny", seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Module()
        unet = components["unet"]
        for parameter in unet.parameters():  # a fine-tuned UNet: not the base's weights
            parameter.data.add_(0.01 * torch.randn_like(parameter))
        model.unet, model.vae = unet, components["vae"]
        text_encoder = components["text_encoder"]
        text_model = getattr(text_encoder, "text_model", text_encoder)  # transformers < 5 wraps the tower
        if extra_token_row:  # their training tokenizer's `img` token with a row of its own
            table = text_model.embeddings.token_embedding
            grown = nn.Embedding(table.num_embeddings + 1, table.embedding_dim)
            grown.weight.data[:-1] = table.weight.data
            text_model.embeddings.token_embedding = grown
        model.text_encoder = nn.Module()
        for name in ("embeddings", "encoder", "final_layer_norm"):
            setattr(model.text_encoder, name, getattr(text_model, name))
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_VISION))
        model.image_encoder = nn.Module()
        model.image_encoder.vision_model, model.image_encoder.visual_projection = (
            vision.vision_model,
            vision.visual_projection,
        )
        width = text_encoder.config.hidden_size
        model.postfuse_module = nn.Module()
        model.postfuse_module.mlp1 = _mlp(2 * width, width, width)
        model.postfuse_module.mlp2 = _mlp(width, width, width)
        model.postfuse_module.layer_norm = nn.LayerNorm(width)
        for parameter in model.postfuse_module.parameters():  # LayerNorms away from 1 and 0, so they count
            parameter.data.copy_(0.5 * torch.randn_like(parameter) + (1.0 if parameter.dim() == 1 else 0.0))
    return model


def write_checkpoint(folder: Path, **layout) -> Path:
    path = Path(folder) / "pytorch_model.bin"
    torch.save(their_layout(**layout).state_dict(), path)
    return path
