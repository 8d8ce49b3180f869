"""One image loader for every entry point (CLI, app, data preparation).

Whatever arrives (a path, bytes, a file object, a PIL image or an array) leaves as a fully decoded
8-bit RGB PIL image with its EXIF orientation applied, or as an `InvalidImageError` that says why.
Nothing is written to disk.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import InvalidImageError

# PIL refuses PNG chunks that inflate past 1 MB, so a valid photo carrying a large colour profile (iCCP;
# print workflows embed 10-20 MB ones) would read as corrupt. Files are capped long before this matters
# (the app takes 40 MB), and the profile is dropped after decoding (colours are read as sRGB).
PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, 32 * 2**20)

ImageInput = Union[str, os.PathLike, bytes, BinaryIO, Image.Image, np.ndarray]


@dataclass(frozen=True)
class ImageLimits:
    """Decoding limits: a larger image is refused before its pixels are decoded."""

    max_pixels: int = 64_000_000  # 8000×8000; phone cameras stay well below


DEFAULT_LIMITS = ImageLimits()

# Modes whose integer values use more than 8 bits; PIL's own convert("RGB") clips them.
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def load_image(source: ImageInput, limits: ImageLimits = DEFAULT_LIMITS, name: str | None = None) -> Image.Image:
    """Decode `source` into an RGB image, refusing what cannot or should not be decoded; messages call it
    `name` (default: a path's own file name, or "the upload")."""
    if isinstance(source, np.ndarray):
        _check_array_shape(source)
        _check_size((source.shape[1], source.shape[0]), limits)
        return _array_to_rgb(source)
    image = source if isinstance(source, Image.Image) else _open(source, name)
    _check_size(image.size, limits)
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # animated: the first frame is the picture a person sees first
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"Could not decode the image: {exc}") from exc
    rgb = _to_rgb(image)
    rgb.info.pop("icc_profile", None)
    return rgb


def scaled_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is `longest`; a thin image keeps at least 1 pixel a side."""
    width, height = size
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_regular_file(path: str | os.PathLike) -> None:
    """Refuse what is not a plain file before opening it: reading a pipe or a device waits forever or never ends."""
    name = os.path.basename(os.fspath(path))
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise InvalidImageError(f"No such image file: {name}") from exc
    except OSError as exc:
        raise InvalidImageError(f"Could not read {name}: {exc.strerror}") from exc
    if stat.S_ISDIR(mode):
        raise InvalidImageError(f"{name} is a folder, not an image")
    if not stat.S_ISREG(mode):
        raise InvalidImageError(f"{name} is not a regular file (a pipe, device or socket); give an image file")


def _open(source: ImageInput, name: str | None) -> Image.Image:
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    # Only the file's own name: a server must not tell a request where its uploads live.
    name = name or (os.path.basename(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "the upload")
    if isinstance(source, (str, os.PathLike)):
        check_regular_file(source)
    try:
        with warnings.catch_warnings():
            # Our own pixel cap (checked next) gives a clearer message than PIL's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(source)
    except FileNotFoundError as exc:
        raise InvalidImageError(f"No such image file: {name}") from exc
    except IsADirectoryError as exc:
        raise InvalidImageError(f"{name} is a folder, not an image") from exc
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"Image refused: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"Could not read {name} as an image (corrupt file or unsupported format)") from exc


def _check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InvalidImageError(f"The image is empty ({width}×{height})")
    if width * height > limits.max_pixels:
        raise InvalidImageError(
            f"The image is {width}×{height} ({width * height / 1e6:.0f} MP); the limit is "
            f"{limits.max_pixels / 1e6:.0f} MP. Please upload a smaller copy."
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _WIDE_INTEGER_MODES or mode == "F":
        return _array_to_rgb(np.asarray(image))
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _check_array_shape(array: np.ndarray) -> None:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise InvalidImageError(f"Unsupported image array of shape {array.shape}")


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    """Scale any-depth grayscale/RGB/RGBA arrays to 8-bit RGB."""
    if array.dtype != np.uint8:
        array = _scale_to_uint8(array)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    image = Image.fromarray(np.ascontiguousarray(array))
    return _to_rgb(image) if image.mode == "RGBA" else image


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    values = array.astype(np.float64)
    if np.issubdtype(array.dtype, np.floating):
        top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
    elif values.max(initial=0) > 255:
        top = 65535.0
    else:
        top = 255.0
    return np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float tensor in [0, 1] from an RGB image."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
