"""Provenance of every picture: an invisible watermark in the pixels and metadata that say "AI-generated".

Watermark: the `invisible-watermark` package's DWT-DCT-SVD method (the family diffusers uses for
SDXL), carrying a 48-bit payload, the ASCII bytes "PBooth". It survives JPEG re-encoding at quality
90 and resizing (the verifier also looks at the picture scaled back to common generation sizes).
Pictures smaller than 256 pixels on a side are too small to carry it and are left unmarked.

Metadata (PNG text chunks): "DigitalSourceType" is the IPTC code trainedAlgorithmicMedia, also given
as an XMP packet (Iptc4xmpExt:DigitalSourceType) that image tools read, beside the prompt and seed.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .images import scaled_size

PAYLOAD = b"PBooth"
BITS = [int(bit) for byte in PAYLOAD for bit in f"{byte:08b}"]
METHOD = "dwtDctSvd"
MIN_SIDE = 256  # the transform needs room; smaller pictures are left as they are
MATCHING_BITS = 44  # of 48: random pictures match so many by chance with odds below 1e-9
GENERATION_SIDES = tuple(range(256, 1025, 64))  # longer sides the verifier scales a picture back to
READ_SIDE = (
    2048  # a larger picture is first scaled to this longest side: verifying 64 MP costs ~3 s, not 36 s and 2.7 GB
)
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
XMP_KEY = "XML:com.adobe.xmp"
XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
    f'Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}"/></rdf:RDF></x:xmpmeta>'
)


def add_watermark(image: Image.Image) -> Image.Image:
    """`image` with the payload hidden in its pixels (unchanged when it is too small to carry it)."""
    if min(image.size) < MIN_SIDE:
        return image
    import cv2
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", BITS)
    marked = encoder.encode(cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR), METHOD)
    return Image.fromarray(cv2.cvtColor(marked, cv2.COLOR_BGR2RGB))


def watermark_images(images):
    """Mark a pipeline's output: a list of PIL images, or an (N, H, W, 3) array in [0, 1]."""
    if isinstance(images, np.ndarray):
        pictures = [Image.fromarray((image * 255).round().clip(0, 255).astype(np.uint8)) for image in images]
        return np.stack([np.asarray(add_watermark(picture), dtype=np.float32) / 255 for picture in pictures])
    return [add_watermark(image) for image in images]


def matching_bits(image: Image.Image) -> int:
    """How many payload bits the picture carries at its best, as it is or scaled back to a generation size."""
    return max(_candidate_bits(image), default=0)


def has_watermark(image: Image.Image) -> bool:
    """Whether some candidate size carries the payload (stops at the first that does)."""
    return any(bits >= MATCHING_BITS for bits in _candidate_bits(image))


def _candidate_bits(image: Image.Image) -> Iterator[int]:
    """Matching payload bits of the picture as it is, then of each rescaled candidate large enough to read."""
    import cv2
    from imwatermark import WatermarkDecoder

    decoder = WatermarkDecoder("bits", len(BITS))
    for candidate in _rescaled(image if image.mode == "RGB" else image.convert("RGB")):
        if min(candidate.size) >= MIN_SIDE:
            decoded = decoder.decode(cv2.cvtColor(np.asarray(candidate), cv2.COLOR_RGB2BGR), METHOD)
            yield int(np.sum(np.asarray(decoded) == np.asarray(BITS)))


def _rescaled(image: Image.Image) -> Iterable[Image.Image]:
    if max(image.size) > READ_SIDE:  # no generation is this large (portrait generate stops at 2048)
        image = image.resize(scaled_size(image.size, READ_SIDE), Image.BICUBIC, reducing_gap=3.0)
    yield image
    width, height = image.size
    for side in GENERATION_SIDES:
        if side != max(width, height):
            scale = side / max(width, height)
            yield image.resize((round(width * scale), round(height * scale)), Image.BICUBIC)


def provenance_text(metadata: dict[str, str]) -> dict[str, str]:
    """`metadata` (prompt, seed, ...) and the marks of AI-generated media, as PNG text entries."""
    return {**metadata, "DigitalSourceType": DIGITAL_SOURCE_TYPE, "AI-generated": "yes", XMP_KEY: XMP}


def png_info(metadata: dict[str, str]) -> PngInfo:
    """PNG chunks of `provenance_text`; the XMP packet as the international text chunk readers expect."""
    info = PngInfo()
    for key, value in provenance_text(metadata).items():
        if key == XMP_KEY:
            info.add_itxt(key, value)
        else:
            info.add_text(key, value)
    return info
