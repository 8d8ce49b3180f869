"""What FastComposer's fusion reads of a face: the CLIP ViT-L/14 image embedding of a square face crop.

FastComposer's inference (their `demo/pipeline.py` object transforms and `FastComposerCLIPImageEncoder`)
pads the reference photo to a square with black, resizes it to 224 px (bilinear, antialiased, on 8-bit
pixels), scales it to [0, 1], normalises it with CLIP's mean and std, and takes the vision model's pooled
output through the visual projection. Their references are head-and-shoulders photos; ours may be any
selfie or group photo, so our detector chooses the face and we cut the crop their photos show (a square
`CROP_SCALE` times the face box, centred on it, clipped to the photo), then prepare it their way.
docs/method.md ("FastComposer") says why.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401 - diffusers finds a saved component's loader here

from ..face.analyzer import FaceAnalysis
from .clip_features import ClipImageEncoder

CROP_SCALE = 3.0  # crop side / longer side of the detector's face box: head, hair and a little of the shoulders

VIT_L14_VISION = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)  # fmt: skip  # openai/clip-vit-large-patch14's vision tower, the one FastComposer fine-tunes


def face_crop_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel box (x0, y0, x1, y1) of the square crop around a face box, clipped to the photo."""
    x0, y0, x1, y1 = box
    side = max(1, round(CROP_SCALE * max(x1 - x0, y1 - y0)))
    left, top = round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2)
    clipped_left, clipped_top = min(max(0, left), width - 1), min(max(0, top), height - 1)
    return (
        clipped_left,
        clipped_top,
        max(min(width, left + side), clipped_left + 1),
        max(min(height, top + side), clipped_top + 1),
    )


def pad_to_square(pixels: torch.Tensor) -> torch.Tensor:
    """(C, H, W) padded with zeros (black) on both sides of the shorter dimension, as FastComposer's PadToSquare."""
    _, height, width = pixels.shape
    extra = abs(height - width)
    before, after = extra // 2, extra - extra // 2
    padding = (before, after, 0, 0) if height > width else (0, 0, before, after)
    return F.pad(pixels, padding, value=0.0)


def prepare_reference(pixels: np.ndarray, size: int) -> torch.Tensor:
    """(3, size, size) in [0, 1] from an (H, W, 3) uint8 crop: square pad, bilinear antialiased resize on 0–255
    values rounded back to 8 bits (what torchvision does to their uint8 tensors), then /255."""
    square = pad_to_square(torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float())
    resized = F.interpolate(square[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return resized.round().clamp(0, 255) / 255.0


class FastComposerImageEncoder(ClipImageEncoder):
    """CLIP vision model + visual projection (FastComposer's fine-tuned ones); features = the projected embedding."""

    def reference_pixels(self, analysis: FaceAnalysis) -> torch.Tensor:
        """The face of `analysis` as FastComposer reads a reference: (3, S, S) in [0, 1], S the model's input size."""
        image = analysis.image
        crop = image.crop(face_crop_box(analysis.face.box, image.width, image.height))
        return prepare_reference(np.asarray(crop.convert("RGB")), self.vision.config.image_size)
