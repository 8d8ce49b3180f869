"""Differentiable alignment of faces to the 112×112 ArcFace template.

One path serves inference (a single photo) and training (a batch of decoded images whose gradient
must reach the pixels): a similarity transform fitted to the five landmarks, applied with
`affine_grid`/`grid_sample`. Pixel centres sit at integer coordinates, as in OpenCV's warpAffine,
which is the convention the template was measured in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ARCFACE_SIZE = 112
# Left eye, right eye, nose tip, left and right mouth corner, in 112×112 crop pixels.
ARCFACE_TEMPLATE = torch.tensor(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


def fit_similarity(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity transform (Umeyama) mapping `source` points onto `target` points.

    source: (N, 2) or (B, N, 2); target: (B, N, 2). Returns (B, 2, 3) matrices A with
    target ≈ A[:, :, :2] @ source + A[:, :, 2].
    """
    target = target.to(torch.float64)
    source = source.to(target).expand_as(target)
    source_mean, target_mean = source.mean(dim=1, keepdim=True), target.mean(dim=1, keepdim=True)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.transpose(1, 2) @ source_centred / source.shape[1]
    u, s, vh = torch.linalg.svd(covariance)
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    d = torch.stack([torch.ones_like(sign), sign], dim=1)  # no reflections
    rotation = u @ torch.diag_embed(d) @ vh
    source_variance = source_centred.pow(2).sum(dim=2).mean(dim=1)
    scale = (s * d).sum(dim=1) / source_variance
    linear = scale[:, None, None] * rotation
    translation = target_mean.transpose(1, 2) - linear @ source_mean.transpose(1, 2)
    return torch.cat([linear, translation], dim=2)


def crop_to_image_transform(landmarks: torch.Tensor, size: int = ARCFACE_SIZE) -> torch.Tensor:
    """(B, 2, 3) transforms from crop pixels to image pixels, fitted to the ArcFace template."""
    template = ARCFACE_TEMPLATE * (size / ARCFACE_SIZE)
    return fit_similarity(template, landmarks)


def align_faces(images: torch.Tensor, landmarks: torch.Tensor, size: int = ARCFACE_SIZE) -> torch.Tensor:
    """Warp each image so its landmarks land on the template; differentiable w.r.t. `images`.

    images: (B, C, H, W) float; landmarks: (B, 5, 2) in image pixels. Returns (B, C, size, size);
    pixels outside the image are zero, as with OpenCV's default border.
    """
    batch, _, height, width = images.shape
    crop_to_image = _homogeneous(crop_to_image_transform(landmarks, size))
    # grid_sample's normalised coordinates (align_corners=True): -1 and 1 are the outer pixel centres.
    to_normalised = torch.tensor([[2 / (width - 1), 0, -1], [0, 2 / (height - 1), -1], [0, 0, 1]], dtype=torch.float64)
    half = (size - 1) / 2
    from_normalised = torch.tensor([[half, 0, half], [0, half, half], [0, 0, 1]], dtype=torch.float64)
    theta = (to_normalised.to(crop_to_image) @ crop_to_image @ from_normalised.to(crop_to_image))[:, :2]
    grid = F.affine_grid(theta.to(images.dtype), [batch, images.shape[1], size, size], align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _homogeneous(affine: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=affine.dtype, device=affine.device)
    return torch.cat([affine, bottom.expand(affine.shape[0], 1, 3)], dim=1)
