"""A small synthetic training set made from scikit-image's astronaut photo, for tests and benchmarks.

Each sample is the photo scaled, shifted and colour-shifted on a plain canvas, with its landmarks
(MTCNN on the original, moved with the photo), an elliptical face mask around them, an aligned
reference crop of a differently jittered copy, and a caption in the data-preparation format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance

from portrait.examples import example_face
from portrait.face.alignment import align_faces
from portrait.face.detection import MTCNNDetector
from portrait.images import image_to_tensor
from portrait.prompts import build_identity_prompt
from train.data_format import Sample, write_sample

CAPTIONS = ("a photo of a woman in a space suit", "a woman smiling in front of a flag", "a portrait of a woman")
SAMPLE_EXPRESSIONS = (None, "happy", "smiling", None)


def make_synthetic_set(root: str | Path, count: int = 8, size: int = 96, seed: int = 0) -> Path:
    root = Path(root)
    rng = np.random.default_rng(seed)
    photo = example_face("astronaut")
    (face,) = MTCNNDetector().detect(photo)
    for index in range(count):
        scale = size / photo.width * rng.uniform(0.9, 1.2)
        shift = rng.uniform(-0.08, 0.08, 2) * size
        image = _jitter(photo, scale, shift, size, rng)
        landmarks = face.landmarks * scale + shift
        mask = _face_ellipse(landmarks, size)
        reference_image = _jitter(photo, scale, -shift, size, rng)
        reference_landmarks = torch.from_numpy(face.landmarks * scale - shift).float()
        reference = align_faces(image_to_tensor(reference_image)[None], reference_landmarks[None])[0]
        prompt = build_identity_prompt(
            CAPTIONS[index % len(CAPTIONS)], "woman", expression=SAMPLE_EXPRESSIONS[index % len(SAMPLE_EXPRESSIONS)]
        )
        name = f"synthetic-{index:04d}"
        sample = Sample.of_prompt(name, f"00/{name}", prompt, landmarks.round(2).tolist(), person_mask=True)
        pixels = (reference.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
        write_sample(root, sample, image, mask, Image.fromarray(pixels), person_mask=mask)
    return root


def _jitter(photo: Image.Image, scale: float, shift: np.ndarray, size: int, rng: np.random.Generator) -> Image.Image:
    scaled = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
    canvas = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 255, 3)))
    canvas.paste(scaled, (round(shift[0]), round(shift[1])))
    return ImageEnhance.Color(canvas).enhance(rng.uniform(0.7, 1.3))


def _face_ellipse(landmarks: np.ndarray, size: int) -> Image.Image:
    centre = landmarks.mean(axis=0)
    radius = np.abs(landmarks - centre).max(axis=0) * [1.6, 2.0]
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse([*(centre - radius), *(centre + radius)], fill=255)
    return mask
