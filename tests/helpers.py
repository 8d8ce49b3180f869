"""What tests share besides fixtures: comparing outputs of separately built models, seeded generators."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# Float pixels of the same tiny model built or loaded twice differ by rounding alone: up to ~1e-6 seen
# (3e-8 on another x86 CPU). Outputs of separate builds are compared within SAME; a change a test
# looks for must exceed CHANGED. On the tiny random model a face moves pixels by ~5e-5, an untrained
# STEA by ~2e-3, a negative prompt by ~0.2.
SAME = 1e-4
CHANGED = 1e-5


def largest_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
