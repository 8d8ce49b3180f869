"""The measurer of the learning experiment: reads a drawn person's traits and expression from pixels.

It grades generated pictures, so it must not be a network the model was trained against: it is a
plain CNN (not φ's IR-ResNet) on the whole frame (not φ's aligned crop), trained on the known
traits and expressions of training people's frames only, never on φ's outputs or on held-out people.
Its training frames are also shown blurred, noisy and passed through the autoencoder, because
generated pictures are decoded by that autoencoder; every run's pictures are decoded by the same one.

Identity read-out: per trait, the predicted distribution over its values; a person's *trait vector*
concatenates them (expression excluded). Two pictures look like the same person when their trait
vectors agree (cosine similarity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .standins import OneCycle, Schedule


class TraitReader(nn.Module):
    def __init__(self, traits: dict[str, int], expressions: int, width: int = 32):
        super().__init__()
        self.traits = dict(traits)
        layers, channels = [], 3
        for out, stride in ((width, 1), (width, 2), (2 * width, 1), (2 * width, 2), (4 * width, 1)):
            layers += [nn.Conv2d(channels, out, 3, stride, 1), nn.BatchNorm2d(out), nn.SiLU()]
            channels = out
        self.body = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: nn.Linear(channels, count) for name, count in self.traits.items()})
        self.expression = nn.Linear(channels, expressions)

    def forward(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """images: (B, 3, H, W) in [-1, 1]. Returns ({trait: (B, values) logits}, (B, expressions) logits)."""
        features = self.body(images).mean(dim=(2, 3))
        return {name: head(features) for name, head in self.heads.items()}, self.expression(features)

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(trait vectors (B, Σ values), unit length; expression probabilities (B, expressions))."""
        self.eval()
        traits, expression = self(images)
        vector = torch.cat([logits.softmax(-1) for logits in traits.values()], dim=-1)
        return F.normalize(vector, dim=-1), expression.softmax(-1)


def degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random blur and noise per picture: generated pictures are softer than drawn ones."""
    sigma = torch.rand(images.shape[0], generator=generator) * 1.2
    kernel_x = torch.arange(-2, 3, dtype=images.dtype)
    kernels = torch.exp(-(kernel_x[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # (B, 5)
    blurred = torch.stack([_separable_blur(image, kernel) for image, kernel in zip(images, kernels)])
    noise = (
        torch.randn(images.shape, generator=generator) * torch.rand(images.shape[0], 1, 1, 1, generator=generator) * 0.1
    )
    return (blurred + noise).clamp(-1, 1)


def _separable_blur(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    channels = image.shape[0]
    padded = F.pad(image[None], (2, 2, 2, 2), mode="replicate")
    horizontal = F.conv2d(padded, kernel.view(1, 1, 1, 5).expand(channels, 1, 1, 5), groups=channels)
    return F.conv2d(horizontal, kernel.view(1, 1, 5, 1).expand(channels, 1, 5, 1), groups=channels)[0]


def train_trait_reader(
    reader: TraitReader,
    views: list[torch.Tensor],
    traits: torch.Tensor,
    expressions: torch.Tensor,
    schedule: Schedule,
) -> float:
    """Train on several `views` of the same frames (drawn, autoencoded, ...): each (N, 3, H, W) in [-1, 1].

    traits: (N, number of traits) value indices; expressions: (N,). Every batch mixes the views and
    degrades half of the pictures. Returns the mean accuracy over traits and expression on the frames
    as drawn.
    """
    generator = torch.Generator().manual_seed(schedule.seed + 1)
    reader.train()
    training = OneCycle(reader.parameters(), len(traits), schedule, "measurer")
    for index in training:
        view = torch.randint(0, len(views), (len(index),), generator=generator)
        images = torch.stack([views[v][i] for v, i in zip(view.tolist(), index.tolist())])
        degraded = torch.rand(len(index), generator=generator) < 0.5
        images = torch.where(degraded[:, None, None, None], degrade(images, generator), images)
        trait_logits, expression_logits = reader(images)
        loss = F.cross_entropy(expression_logits, expressions[index])
        loss = loss + sum(F.cross_entropy(logits, traits[index, k]) for k, logits in enumerate(trait_logits.values()))
        training.step(loss)
    return reading_accuracy(reader, views[0], traits, expressions)


@torch.no_grad()
def reading_accuracy(
    reader: TraitReader, images: torch.Tensor, traits: torch.Tensor, expressions: torch.Tensor
) -> float:
    """Mean accuracy over every trait and the expression."""
    reader.eval()
    hits = []
    for start in range(0, len(images), 256):
        trait_logits, expression_logits = reader(images[start : start + 256])
        chunk = slice(start, start + 256)
        hits += [
            (logits.argmax(-1) == traits[chunk, k]).float().mean() for k, logits in enumerate(trait_logits.values())
        ]
        hits.append((expression_logits.argmax(-1) == expressions[chunk]).float().mean())
    return float(torch.stack(hits).mean())
