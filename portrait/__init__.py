"""PortraitBooth inference engine: identity-preserving portraits from one selfie, no fine-tuning."""

from .errors import (
    DataError,
    FaceError,
    FaceTooSmallError,
    InvalidImageError,
    MissingWeightsError,
    NoFaceError,
    OptionError,
    PortraitError,
    PromptError,
)
from .identity.clip_features import ClipImageEncoder
from .identity.encoder import IdentityEncoder
from .identity.fastcomposer_image import FastComposerImageEncoder
from .pipeline import FaceEncoding, PortraitBoothPipeline, PortraitBoothPipelineOutput
from .postfuse import FastComposerFusion
from .stea import STEA

# diffusers finds saved components by importing this package and looking up their class names.
__all__ = [
    "ClipImageEncoder",
    "DataError",
    "FaceEncoding",
    "FaceError",
    "FaceTooSmallError",
    "FastComposerFusion",
    "FastComposerImageEncoder",
    "IdentityEncoder",
    "InvalidImageError",
    "MissingWeightsError",
    "NoFaceError",
    "OptionError",
    "PortraitBoothPipeline",
    "PortraitBoothPipelineOutput",
    "PortraitError",
    "PromptError",
    "STEA",
]
