"""ECAC attention capture: cross-attention maps of only the tokens the loss needs.

`CrossAttentionCapture` replaces diffusers' processor on the chosen cross-attention layers. It keeps
the fused SDPA kernel for the layer's output and, beside it, computes the softmax probability of
the identity and expression tokens only, averaged over heads: (B, HW, 2) per layer. The softmax
normaliser needs every key, but it is recomputed in the backward pass (activation checkpointing),
so the full (B, heads, HW, 77) probability tensor is never kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch.utils.checkpoint import checkpoint

NO_TOKEN = -1


@dataclass
class AttentionStore:
    """What the capture processors read (which tokens) and write (their maps), for one forward pass."""

    token_indices: torch.Tensor | None = None  # (B, T) long; NO_TOKEN where a sample lacks that word
    latent_size: tuple[int, int] = (64, 64)
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # layer → (B, HW, T)

    def resolution(self, tokens: int) -> tuple[int, int]:
        """(h, w) of a layer with `tokens` query positions, at the latent's aspect ratio."""
        height, width = self.latent_size
        h = round(math.sqrt(tokens * height / width))
        return h, tokens // h


def kept_token_probabilities(query: torch.Tensor, key: torch.Tensor, token_indices: torch.Tensor) -> torch.Tensor:
    """softmax(QKᵀ/√d) at the kept key positions, averaged over heads.

    query: (B, heads, HW, d); key: (B, heads, L, d); token_indices: (B, T) with NO_TOKEN allowed.
    Returns (B, HW, T); a NO_TOKEN column is all zeros.
    """
    scale = query.shape[-1] ** -0.5
    log_normaliser = torch.logsumexp((query @ key.transpose(-1, -2)) * scale, dim=-1)  # (B, heads, HW)
    index = token_indices.clamp(min=0)[:, None, :, None].expand(-1, key.shape[1], -1, key.shape[-1])
    kept_keys = key.gather(2, index)  # (B, heads, T, d)
    kept_logits = (query @ kept_keys.transpose(-1, -2)) * scale  # (B, heads, HW, T)
    probabilities = torch.exp(kept_logits - log_normaliser[..., None]).mean(dim=1)
    return probabilities * (token_indices >= 0)[:, None, :].to(probabilities)


class CrossAttentionCapture(AttnProcessor2_0):
    """SDPA cross-attention that also records the kept tokens' attention maps in `store`."""

    def __init__(self, store: AttentionStore, name: str):
        super().__init__()
        self.store = store
        self.name = name

    def __call__(
        self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs
    ):
        if encoder_hidden_states is None or self.store.token_indices is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        batch, _, _ = hidden_states.shape
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        heads = attn.heads
        query = attn.to_q(hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // heads
        query, key, value = (t.view(batch, -1, heads, head_dim).transpose(1, 2) for t in (query, key, value))
        output = F.scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False)
        output = output.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(query.dtype)
        output = attn.to_out[1](attn.to_out[0](output))
        if attn.residual_connection:
            output = output + hidden_states
        indices = self.store.token_indices.to(query.device)
        if torch.is_grad_enabled():
            maps = checkpoint(kept_token_probabilities, query, key, indices, use_reentrant=False)
        else:
            maps = kept_token_probabilities(query, key, indices)
        self.store.maps[self.name] = maps.float()
        return output / attn.rescale_output_factor


def cross_attention_layers(unet, prefixes: tuple[str, ...]) -> list[str]:
    """Processor names (as `unet.attn_processors` keys) of the cross-attention layers under `prefixes`."""
    names = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
    chosen = [name for name in names if name.startswith(tuple(f"{prefix}." for prefix in prefixes))]
    if not chosen:
        raise ValueError(
            f"No cross-attention layer under {prefixes}; this UNet has {sorted({n.split('.attentions')[0] for n in names})}"
        )
    return chosen


def install_attention_capture(unet, prefixes: tuple[str, ...]) -> AttentionStore:
    """Capture on the chosen layers; every other layer keeps its processor."""
    for name in cross_attention_layers(unet, prefixes):
        module = unet.get_submodule(name.removesuffix(".processor"))
        if module.spatial_norm is not None or module.group_norm is not None:
            raise ValueError(f"{name}: attention with spatial/group norm is not a cross-attention layer")
    store = AttentionStore()
    processors = dict(unet.attn_processors)
    for name in cross_attention_layers(unet, prefixes):
        processors[name] = CrossAttentionCapture(store, name)
    unet.set_attn_processor(processors)
    return store


def remove_attention_capture(unet) -> None:
    """Back to diffusers' SDPA processor on every layer that captured (for validation and saving)."""
    processors = {
        name: AttnProcessor2_0() if isinstance(processor, CrossAttentionCapture) else processor
        for name, processor in unet.attn_processors.items()
    }
    unet.set_attn_processor(processors)
