"""PortraitBooth's training objective, one small function per term (docs/method.md, "Losses"; paper eqs. 5-7).

Shapes: B batch, C latent channels, h×w latent size, HW a layer's query positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from portrait.face.alignment import align_faces
from portrait.identity.encoder import IdentityEncoder


def noise_loss(
    prediction: torch.Tensor, target: torch.Tensor, face_mask: torch.Tensor, masked: torch.Tensor
) -> torch.Tensor:
    """ε-prediction MSE; for `masked` samples only inside the face mask.

    prediction, target: (B, C, h, w); face_mask: (B, 1, H, W) in [0, 1], resized here to (h, w);
    masked: (B,) bool. Masked samples: Σ M·(ε̂−ε)² / (C·Σ M); the others: plain mean.
    """
    squared = (prediction.float() - target.float()).pow(2)
    weights = F.interpolate(face_mask.float(), size=squared.shape[-2:], mode="area")
    weights = torch.where(masked[:, None, None, None], weights, torch.ones_like(weights)).expand_as(squared)
    per_sample = (weights * squared).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp_min(1e-8)
    return per_sample.mean()


def one_step_reverse(
    noisy: torch.Tensor, prediction: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """ẑ0 = (z_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t, with ᾱ_t per sample: (B,).

    A v-prediction model (v = √ᾱ·ε − √(1−ᾱ)·z0) gives ẑ0 = √ᾱ·z_t − √(1−ᾱ)·v̂ instead.
    """
    alpha = alphas_cumprod.to(noisy.device, torch.float32).view(-1, 1, 1, 1)
    if prediction_type == "v_prediction":
        estimate = alpha.sqrt() * noisy.float() - (1 - alpha).sqrt() * prediction.float()
    else:
        estimate = (noisy.float() - (1 - alpha).sqrt() * prediction.float()) / alpha.sqrt()
    return estimate.to(noisy.dtype)


def identity_loss(generated: torch.Tensor, reference: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Σ (1 − cos(φ(f), φ(x̂0 face))) / B over the samples it applies to (t ≤ R_t, a face given);
    the others contribute 0. generated, reference: (K, E) embeddings of those K samples."""
    distance = 1 - F.cosine_similarity(generated.float(), reference.float(), dim=-1)
    return distance.sum() / batch_size


def decoded_face_embedding(
    vae, identity_encoder: IdentityEncoder, latents: torch.Tensor, landmarks: torch.Tensor
) -> torch.Tensor:
    """φ embedding of the face in VAE-decoded `latents`, aligned with `landmarks` (B, 5, 2) in pixels.

    The decode and the warp keep their graphs, so the loss reaches the UNet.
    """
    pixels = vae.decode(latents / vae.config.scaling_factor).sample  # (B, 3, H, W) in [-1, 1]
    faces = align_faces(((pixels.float() + 1) / 2).clamp(0, 1), landmarks.float())
    return identity_encoder(faces.to(identity_encoder.dtype)).embedding


def localization_loss(
    maps: dict[str, torch.Tensor],
    face_mask: torch.Tensor,
    layer_size: dict[str, tuple[int, int]],
    beta: float,
    gamma: float,
    lam: float,
    mu: float,
) -> torch.Tensor:
    """L_loc (eq. 7), averaged over layers.

    maps: layer → (B, HW, 2) head-averaged attention of [identity token, expression token]; a
    sample without the word has an all-zero column and is left out of that word's term.
    face_mask: (B, 1, H, W) in [0, 1]; layer_size: layer → (h, w) with h·w = HW.
    Per layer: λ·[mean(A_id·(1−M)) + mean(relu(β−A_id)·M)] + µ·[same for A_expr with γ].
    """
    total = face_mask.new_zeros(())
    for name, attention in maps.items():
        h, w = layer_size[name]
        mask = F.interpolate(face_mask.float(), size=(h, w), mode="area").flatten(1)  # (B, HW)
        terms = []
        for column, (weight, ceiling) in enumerate(((lam, beta), (mu, gamma))):
            a = attention[..., column]
            present = a.detach().abs().sum(dim=1) > 0
            if weight == 0 or not present.any():
                terms.append(face_mask.new_zeros(()))
                continue
            a, m = a[present], mask[present]
            terms.append(weight * ((a * (1 - m)).mean() + (F.relu(ceiling - a) * m).mean()))
        total = total + sum(terms)
    return total / max(len(maps), 1)
