"""Stand-ins for the pretrained parts that PortraitBooth keeps frozen, trained here at toy size.

In the paper the VAE comes with Stable Diffusion and φ with TFace, both pretrained on millions of
images and frozen during PortraitBooth training. At CPU scale (runner.py) their tiny
versions are trained first, on training people only, so that their outputs mean something: the
VAE as an autoencoder, φ as a face-recognition network with people as classes. Neither ever sees
a held-out person.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from portrait.identity.encoder import IdentityEncoder


@dataclass(frozen=True)
class Schedule:
    """Steps of AdamW with a one-cycle learning rate (warm up, then anneal): fast convergence in few steps."""

    steps: int
    learning_rate: float
    batch_size: int = 32
    seed: int = 0


class OneCycle:
    """The loop every stand-in shares: random index batches, one per step, with a progress bar, and
    AdamW under a one-cycle learning rate (warm up, then anneal), which converges in few steps."""

    def __init__(self, parameters, count: int, schedule: Schedule, what: str):
        self.count, self.schedule, self.what = count, schedule, what
        self.optimizer = torch.optim.AdamW(parameters, lr=schedule.learning_rate)
        self.lr_schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, schedule.learning_rate, total_steps=schedule.steps, pct_start=0.1
        )

    def __iter__(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.schedule.seed)
        for _ in tqdm(range(self.schedule.steps), desc=self.what, unit="step", leave=False):
            yield torch.randint(0, self.count, (self.schedule.batch_size,), generator=generator)

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.lr_schedule.step()


def train_autoencoder(
    vae, images: torch.Tensor, masks: torch.Tensor, schedule: Schedule, face_weight: float = 9.0
) -> float:
    """Train `vae` to reconstruct `images` (N, 3, H, W) in [-1, 1]; set its latent scaling factor.

    The reconstruction error (L1 + L2) counts `1 + face_weight` times inside the face `masks`
    (N, 1, H, W): a small autoencoder learns the large flat areas first, and the face is what the
    experiment is about. The posterior starts nearly deterministic (log-variance −8) and its KL term
    is tiny, as in Stable Diffusion's VAE. Afterwards the scaling factor is set so that latents have
    unit standard deviation, as SD's 0.18215 does for its VAE. Returns the final mean squared error.
    """
    vae.train().requires_grad_(True)
    channels = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.bias[channels:].fill_(-8.0)
    training = OneCycle(vae.parameters(), len(images), schedule, "autoencoder")
    for index in training:
        x, weight = images[index], 1 + face_weight * masks[index]
        posterior = vae.encode(x).latent_dist
        error = vae.decode(posterior.sample()).sample - x
        loss = (weight * (error.abs() + error.pow(2))).mean() + 1e-6 * posterior.kl().mean()
        training.step(loss)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in images.split(256)])
        reconstructed = vae.decode(latents[:256]).sample
    vae.register_to_config(scaling_factor=float(1 / latents.std()))
    return float(F.mse_loss(reconstructed, images[:256]))


class CosineClassifier(nn.Module):
    """Class logits s·cos(embedding, class centre): the normalised softmax face-recognition heads use."""

    def __init__(self, dim: int, classes: int, scale: float = 16.0):
        super().__init__()
        self.centres = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.scale = scale

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(embedding, dim=-1) @ F.normalize(self.centres, dim=-1).T


def train_recognizer(encoder: IdentityEncoder, crops: torch.Tensor, labels: torch.Tensor, schedule: Schedule) -> float:
    """Train φ to tell people apart: aligned `crops` (N, 3, 112, 112) in [0, 1], person `labels` (N,).

    The head (class centres) is thrown away afterwards, as face-recognition training does; φ keeps
    its embedding and its shallow features. Returns the accuracy on the training crops.
    """
    head = CosineClassifier(encoder.config.embedding_dim, int(labels.max()) + 1)
    encoder.train().requires_grad_(True)
    training = OneCycle([*encoder.parameters(), *head.parameters()], len(crops), schedule, "identity encoder")
    for index in training:
        loss = F.cross_entropy(head(encoder(crops[index]).embedding), labels[index])
        training.step(loss)
    encoder.eval().requires_grad_(False)
    with torch.no_grad():
        predicted = torch.cat([head(encoder(chunk).embedding).argmax(-1) for chunk in crops.split(256)])
    return float((predicted == labels).float().mean())
