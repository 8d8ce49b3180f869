"""Face analysis: detection, 5 landmarks, ArcFace alignment and face-parsing masks."""

from .alignment import ARCFACE_SIZE, ARCFACE_TEMPLATE, align_faces, fit_similarity
from .analyzer import FaceAnalysis, FaceAnalyzer
from .detection import DetectedFace, FaceDetector, MTCNNDetector, RetinaFaceDetector, load_detector
from .parsing import FACE_LABELS, FaceParser, face_mask_from_labels

__all__ = [
    "ARCFACE_SIZE",
    "ARCFACE_TEMPLATE",
    "DetectedFace",
    "FACE_LABELS",
    "FaceAnalysis",
    "FaceAnalyzer",
    "FaceDetector",
    "FaceParser",
    "MTCNNDetector",
    "RetinaFaceDetector",
    "align_faces",
    "face_mask_from_labels",
    "fit_similarity",
    "load_detector",
]
