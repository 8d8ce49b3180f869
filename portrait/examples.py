"""Example faces that need no download: photos shipped inside installed packages."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import InvalidImageError

EXAMPLE_PREFIX = "example:"
# name → (scikit-image sample, description)
EXAMPLE_FACES = {
    "astronaut": ("astronaut", "Eileen Collins, NASA portrait (public domain), shipped with scikit-image"),
}


def example_face(name: str) -> Image.Image:
    """The example photo called `name` (see EXAMPLE_FACES)."""
    if name not in EXAMPLE_FACES:
        raise InvalidImageError(f"Unknown example face {name!r}; choose one of {', '.join(EXAMPLE_FACES)}")
    from skimage import data

    sample, _ = EXAMPLE_FACES[name]
    return Image.fromarray(np.asarray(getattr(data, sample)()))
