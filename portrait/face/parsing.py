"""Face-parsing mask: face skin, brows, eyes, glasses, nose, mouth and lips; no hair, neck or clothes.

facexlib's BiSeNet predicts the 19 CelebAMask-HQ labels on a 512×512 face crop. A full photo is
parsed through a square crop around the detected face and the labels are pasted back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..loading import FACEXLIB_WEIGHTS, resolve_weight_file
from .detection import DetectedFace

# CelebAMask-HQ label numbers as BiSeNet predicts them (ParseNet numbers its labels differently).
FACE_LABELS = {
    "skin": 1,
    "left_brow": 2,
    "right_brow": 3,
    "left_eye": 4,
    "right_eye": 5,
    "glasses": 6,
    "nose": 10,
    "mouth": 11,
    "upper_lip": 12,
    "lower_lip": 13,
}
PARSING_SIZE = 512
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = 2.0  # crop side relative to the larger side of the face box, so the whole head fits


def face_mask_from_labels(labels: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Boolean mask of the face-region labels in a label map of any shape."""
    face = list(FACE_LABELS.values())
    if isinstance(labels, torch.Tensor):
        return torch.isin(labels, torch.tensor(face, device=labels.device))
    return np.isin(labels, face)


def face_crop_box(face: DetectedFace, scale: float = CROP_SCALE) -> tuple[int, int, int, int]:
    """Square box (x0, y0, x1, y1) centred on the face; it may reach outside the image."""
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    side = max(1, round(max(face.width, face.height) * scale))
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    return x0, y0, x0 + side, y0 + side


class FaceParser:
    """BiSeNet over a crop around one face; returns a full-size boolean face mask."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @classmethod
    def load(cls, weights_dir: str | Path | None = None, device: str | torch.device = "cpu") -> "FaceParser":
        from facexlib.parsing.bisenet import BiSeNet

        model = BiSeNet(num_class=19)
        path = resolve_weight_file(FACEXLIB_WEIGHTS["bisenet"], weights_dir)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        return cls(model, device)

    def labels(self, image: Image.Image, face: DetectedFace) -> np.ndarray:
        """(H, W) uint8 label map of the whole image; 0 (background) outside the face crop."""
        box = face_crop_box(face)
        crop = image.crop(box).resize((PARSING_SIZE, PARSING_SIZE), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        with torch.inference_mode():
            logits = self.model(((pixels - mean) / std).to(self.device))[0]
            side = box[2] - box[0]
            logits = F.interpolate(logits.float(), size=(side, side), mode="bilinear", align_corners=False)
            crop_labels = logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
        return _paste(crop_labels, box, image.size)

    def face_mask(self, image: Image.Image, face: DetectedFace) -> np.ndarray:
        return face_mask_from_labels(self.labels(image, face))


def _paste(crop: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Place `crop` (covering `box`) into a zero canvas of `size`, clipping at the borders."""
    width, height = size
    canvas = np.zeros((height, width), dtype=crop.dtype)
    x0, y0, x1, y1 = box
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x1, width), min(y1, height)
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] = crop[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return canvas
