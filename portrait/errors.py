"""Errors a user can act on. Each message says what went wrong and what to do about it."""


class PortraitError(Exception):
    """Base of every error the engine raises on purpose; the app shows its message as is."""


class InvalidImageError(PortraitError):
    """The file is not an image we can read, or is too large to decode safely."""


class FaceError(PortraitError):
    """The image holds no usable face."""


class NoFaceError(FaceError):
    """No face was detected."""


class FaceTooSmallError(FaceError):
    """A face was found but is too small to carry an identity."""


class PromptError(PortraitError, ValueError):
    """The prompt cannot be used as asked (identity word missing, too long, unknown expression)."""


class MissingWeightsError(PortraitError, FileNotFoundError):
    """Model weights are not on this machine and cannot be downloaded now."""


class OptionError(PortraitError, ValueError):
    """An option is out of its range, or a recipe names a setting that does not exist."""


class DataError(PortraitError):
    """A data set, manifest or checkpoint is missing or is not what the command needs."""
