"""Face detectors: facexlib RetinaFace (production) and MTCNN (offline default; weights ship in its wheel).

Both return the same `DetectedFace` records, so everything after detection is detector-agnostic.
Landmark order: left eye, right eye, nose, left and right mouth corner, as seen in the image.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from ..defaults import DEFAULT_DETECTOR
from ..loading import FACEXLIB_WEIGHTS, resolve_weight_file, weights_dir_or_default

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels
    landmarks: np.ndarray  # (5, 2) float32, image pixels
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


class FaceDetector(Protocol):
    name: str

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        """All faces in an RGB image, in no particular order."""

    def detect_batch(self, images: list[Image.Image]) -> list[list[DetectedFace]]:
        """`detect` for several images; batched on the accelerator where the detector allows."""


class MTCNNDetector:
    """facenet-pytorch's MTCNN. Its first pyramid level needs a side of at least `min_face_size`."""

    name = "mtcnn"

    def __init__(self, device: str | torch.device = "cpu", min_face_size: int = 20, min_score: float = 0.9):
        from facenet_pytorch import MTCNN

        self.min_face_size = min_face_size
        self.min_score = min_score
        self.model = MTCNN(keep_all=True, min_face_size=min_face_size, device=torch.device(device))

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[Image.Image]) -> list[list[DetectedFace]]:
        """Images of one size go through MTCNN as one batch; the rest one by one."""
        results: list[list[DetectedFace]] = [[] for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            if min(image.size) >= self.min_face_size:  # MTCNN itself raises on smaller images
                by_size.setdefault(image.size, []).append(index)
        for indices in by_size.values():
            with torch.inference_mode():
                boxes, scores, landmarks = self.model.detect([images[i] for i in indices], landmarks=True)
            for index, image_boxes, image_scores, image_points in zip(indices, boxes, scores, landmarks):
                if image_boxes is not None:
                    results[index] = [
                        DetectedFace(tuple(float(v) for v in box), np.asarray(points, dtype=np.float32), float(score))
                        for box, score, points in zip(image_boxes, image_scores, image_points)
                        if score >= self.min_score
                    ]
        return results


class RetinaFaceDetector:
    """facexlib's RetinaFace-ResNet50, built directly so that its weights load safely on any device."""

    name = "retinaface"

    def __init__(self, weights: Path, device: str | torch.device = "cpu", min_score: float = 0.8):
        from facexlib.detection.retinaface import RetinaFace

        self.min_score = min_score
        self.model = RetinaFace(network_name="resnet50", half=False, device=torch.device(device))
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
        self.model.eval()

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        if min(image.size) < 16:
            return []  # below the smallest anchor
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
        with torch.inference_mode():
            rows = self.model.detect_faces(bgr, conf_threshold=self.min_score)
        return [
            DetectedFace(tuple(float(v) for v in row[:4]), row[5:15].reshape(5, 2).astype(np.float32), float(row[4]))
            for row in rows
        ]

    def detect_batch(self, images: list[Image.Image]) -> list[list[DetectedFace]]:
        return [self.detect(image) for image in images]  # RetinaFace resizes per image; no common batch


def load_detector(
    name: str = DEFAULT_DETECTOR, weights_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> FaceDetector:
    """`retinaface` (weights file, or its download from the facexlib release), `mtcnn` (no download), or `auto`:
    RetinaFace when its weights are already here, else MTCNN when facenet-pytorch is installed (a
    Hugging Face Space installs only requirements.txt, without it), else RetinaFace."""
    folder = weights_dir_or_default(weights_dir)
    retinaface = FACEXLIB_WEIGHTS["retinaface"]
    if name == DEFAULT_DETECTOR:
        use_mtcnn = not (folder / retinaface.filename).is_file() and importlib.util.find_spec("facenet_pytorch")
        name = "mtcnn" if use_mtcnn else "retinaface"
        logger.info("Face detector: %s", name)
    if name == "retinaface":
        return RetinaFaceDetector(resolve_weight_file(retinaface, folder), device=device)
    if name == "mtcnn":
        return MTCNNDetector(device=device)
    raise ValueError(f"Unknown face detector {name!r}; choose auto, retinaface or mtcnn")
