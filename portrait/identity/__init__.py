"""φ: face-recognition backbones and the identity encoder built on them."""

from .encoder import DEFAULT_IDENTITY_ENCODER, IDENTITY_ENCODERS, IdentityEncoder, IdentityFeatures
from .iresnet import IResNet

__all__ = ["DEFAULT_IDENTITY_ENCODER", "IDENTITY_ENCODERS", "IResNet", "IdentityEncoder", "IdentityFeatures"]
