import math

import cv2
import numpy as np
import torch

from portrait.face.alignment import ARCFACE_TEMPLATE, align_faces, crop_to_image_transform, fit_similarity


def rotation_scale(angle_deg: float, scale: float) -> torch.Tensor:
    a = math.radians(angle_deg)
    return scale * torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)


def test_fit_similarity_recovers_a_known_transform():
    linear, shift = rotation_scale(20, 1.7), torch.tensor([30.0, -4.0], dtype=torch.float64)
    target = (ARCFACE_TEMPLATE.double() @ linear.T + shift)[None]
    affine = fit_similarity(ARCFACE_TEMPLATE, target)[0]
    torch.testing.assert_close(affine[:, :2], linear, atol=1e-9, rtol=0)
    torch.testing.assert_close(affine[:, 2], shift, atol=1e-9, rtol=0)


def test_template_landmarks_leave_a_112_crop_unchanged():
    image = torch.rand(1, 3, 112, 112)
    aligned = align_faces(image, ARCFACE_TEMPLATE[None])
    torch.testing.assert_close(aligned, image, atol=5e-5, rtol=0)


def test_matches_opencv_warp_affine():
    rng = np.random.default_rng(0)
    image = rng.random((300, 260, 3), dtype=np.float32)
    landmarks = ARCFACE_TEMPLATE.double() @ rotation_scale(-12, 1.9).T + torch.tensor([60.0, 70.0], dtype=torch.float64)
    ours = align_faces(torch.from_numpy(image).permute(2, 0, 1)[None], landmarks[None].float())[0].permute(1, 2, 0)
    crop_to_image = crop_to_image_transform(landmarks[None])[0].numpy()
    reference = cv2.warpAffine(image, crop_to_image, (112, 112), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    np.testing.assert_allclose(ours.numpy(), reference, atol=2e-3)


def test_gradient_reaches_the_input_image():
    image = torch.rand(2, 3, 128, 128, requires_grad=True)
    landmarks = (ARCFACE_TEMPLATE + 8).expand(2, 5, 2)
    align_faces(image, landmarks).square().sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert image.grad[:, :, :4].abs().sum() == 0  # rows above the warped crop get no gradient
