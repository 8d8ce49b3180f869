"""From a photo to the one face the engine uses: detect, choose, align, and (optionally) parse."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..defaults import DEFAULT_DETECTOR
from ..errors import FaceTooSmallError, NoFaceError
from ..images import ImageInput, image_to_tensor, load_image, scaled_size
from .alignment import ARCFACE_SIZE, align_faces
from .detection import DetectedFace, FaceDetector, load_detector
from .parsing import FaceParser

logger = logging.getLogger(__name__)

MIN_FACE_PIXELS = 32  # a smaller face carries too little detail for its identity
DETECTION_SIDE = 1600  # longest side faces are searched at


@dataclass
class FaceAnalysis:
    """The face chosen in one photo, with what the rest of the engine needs from it."""

    image: Image.Image  # the whole photo, RGB, upright
    face: DetectedFace
    num_faces: int
    aligned: torch.Tensor  # (3, 112, 112) float in [0, 1]
    mask: np.ndarray | None = None  # (H, W) bool face-parsing mask, when asked for

    @property
    def notice(self) -> str | None:
        if self.num_faces > 1:
            return f"Found {self.num_faces} faces; using the largest one."
        return None

    def aligned_image(self) -> Image.Image:
        array = (self.aligned.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return Image.fromarray(array)


class FaceAnalyzer:
    def __init__(
        self, detector: FaceDetector, parser: FaceParser | None = None, min_face_pixels: int = MIN_FACE_PIXELS
    ):
        self.detector = detector
        self.parser = parser
        self.min_face_pixels = min_face_pixels
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        detector: str = DEFAULT_DETECTOR,
        with_parser: bool = False,
        weights_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> "FaceAnalyzer":
        parser = FaceParser.load(weights_dir, device) if with_parser else None
        return cls(load_detector(detector, weights_dir, device), parser)

    def detect(self, image: ImageInput) -> tuple[Image.Image, list[DetectedFace]]:
        """The decoded image and its faces, largest first."""
        image = load_image(image)
        return image, self.detect_many([image])[0]

    def detect_many(self, images: list[Image.Image]) -> list[list[DetectedFace]]:
        """Faces of several decoded images, largest first; one batched detector call where it can.

        Large photos are searched at DETECTION_SIDE pixels (a phone's 48 MP would cost seconds and GBs);
        boxes and landmarks come back in the photo's own pixels, so alignment uses full resolution.
        """
        small = [image if max(image.size) <= DETECTION_SIDE else image.resize(scaled_size(image.size, DETECTION_SIDE), Image.BILINEAR)
                 for image in images]  # fmt: skip
        scales = [max(shrunk.size) / max(image.size) for shrunk, image in zip(small, images)]
        with self._lock:  # detectors keep per-call state (facexlib's RetinaFace does)
            found = self.detector.detect_batch(small)
        return [largest_first([_rescaled(face, 1 / scale) for face in faces]) for faces, scale in zip(found, scales)]

    def analyze(self, image: ImageInput, with_mask: bool = False) -> FaceAnalysis:
        """The largest face of `image`, aligned; raises `NoFaceError` or `FaceTooSmallError`."""
        return self.analysis_of(*self.detect(image), with_mask=with_mask)

    def analysis_of(self, image: Image.Image, faces: list[DetectedFace], with_mask: bool = False) -> FaceAnalysis:
        """Choose, check and align among faces already detected in `image` (largest first)."""
        width, height = image.size
        if not faces:
            raise NoFaceError(
                f"No face found in the {width}×{height} image. Use a photo where the face is clearly "
                "visible, facing the camera, and at least a few dozen pixels wide."
            )
        face = faces[0]
        if min(face.width, face.height) < self.min_face_pixels:
            raise FaceTooSmallError(
                f"The face is only {face.width:.0f}×{face.height:.0f} pixels in a {width}×{height} image; "
                f"it needs at least {self.min_face_pixels} pixels. Crop closer or use a larger photo."
            )
        if len(faces) > 1:
            logger.info("Found %d faces; using the largest one", len(faces))
        landmarks = torch.from_numpy(face.landmarks)[None]
        aligned = align_faces(image_to_tensor(image)[None], landmarks, ARCFACE_SIZE)[0]
        mask = None
        if with_mask:
            if self.parser is None:
                raise ValueError("This FaceAnalyzer was built without a face parser")
            mask = self.parser.face_mask(image, face)
        return FaceAnalysis(image, face, len(faces), aligned, mask)


def largest_first(faces: list[DetectedFace]) -> list[DetectedFace]:
    return sorted(faces, key=lambda face: face.area, reverse=True)


def _rescaled(face: DetectedFace, factor: float) -> DetectedFace:
    if factor == 1.0:
        return face
    return DetectedFace(tuple(v * factor for v in face.box), face.landmarks * factor, face.score)
