"""Pictures that show a user what the engine understood: the detected face, and where each person goes."""

from __future__ import annotations

import base64
import io

import gradio as gr
import numpy as np
from gradio.data_classes import ImageData
from PIL import Image, ImageDraw

from portrait.face.analyzer import FaceAnalysis
from portrait.multi import default_regions

PREVIEW_SIZE = 256
REGION_COLOURS = ((66, 133, 244), (234, 67, 53), (52, 168, 83), (251, 188, 5))


def face_preview(analysis: FaceAnalysis) -> Image.Image:
    """A square crop around the chosen face with its box and five landmarks drawn."""
    x0, y0, x1, y1 = analysis.face.box
    side = max(x1 - x0, y1 - y0) * 1.6
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = cx - side / 2, cy - side / 2
    crop = analysis.image.crop((round(left), round(top), round(left + side), round(top + side)))
    scale = PREVIEW_SIZE / crop.width
    crop = crop.resize((PREVIEW_SIZE, PREVIEW_SIZE), Image.BICUBIC)
    draw = ImageDraw.Draw(crop)
    box = [(x0 - round(left)) * scale, (y0 - round(top)) * scale, (x1 - round(left)) * scale, (y1 - round(top)) * scale]
    draw.rectangle(box, outline=(0, 255, 120), width=3)
    for x, y in analysis.face.landmarks:
        px, py = (x - round(left)) * scale, (y - round(top)) * scale
        draw.ellipse((px - 4, py - 4, px + 4, py + 4), fill=(255, 60, 60), outline=(255, 255, 255))
    return crop


def regions_preview(width: int, height: int, split: float, overlap: float, labels: tuple[str, ...]) -> Image.Image:
    """The canvas tinted by each person's weight, labelled with their identity words."""
    scale = PREVIEW_SIZE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    masks = default_regions(len(labels), size[1], size[0], split, overlap)
    canvas = np.full((size[1], size[0], 3), 245.0)
    for mask, colour in zip(masks, REGION_COLOURS):
        canvas = canvas * (1 - 0.6 * mask[..., None]) + np.array(colour) * 0.6 * mask[..., None]
    image = Image.fromarray(canvas.round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for index, (mask, label) in enumerate(zip(masks, labels), start=1):
        columns = np.nonzero(mask[0] >= 0.5)[0]
        centre = (columns.min() + columns.max()) / 2 if columns.size else size[0] / 2
        text = f"{index}: {label}"
        draw.text((centre - 3 * len(text), size[1] / 2 - 6), text, fill=(0, 0, 0))
    return image


class InMemoryImage(gr.Image):
    """An output image sent inside the response as a data URL: Gradio writes gr.Image outputs to its cache
    folder and serves them by URL for minutes; a picture of a visitor's face must never touch the disk.
    API callers receive {"url": "data:image/png;base64,...", "path": null}."""

    is_template = True  # same browser component as gr.Image

    def postprocess(self, value: Image.Image | None) -> ImageData | None:
        if value is None:
            return None
        return ImageData(url=data_url(value), mime_type="image/png")


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
