"""Face detailer: small faces of a finished picture re-drawn at the model's own resolution.

A face that covers few pixels (a full-body shot, two people side by side) gets few latents: SD 1.5's
VAE works on 8×8-pixel cells, so a 60-pixel face is drawn on under 8×8 latents and comes out blurred.
Each face smaller than `max_face_fraction` of the picture's shorter side is cropped with a margin,
enlarged to the model's native size, re-diffused with diffusers' img2img pipeline at a moderate
strength under the same prompt with that person's identity in `prompt_embeds` (the same STEA condition
as the first pass, docs/method.md), shrunk back and pasted with a feathered border. Pixels outside the
crops are left exactly as they were. In pictures of several people each face is re-drawn with the
identity of the person whose region holds its centre.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image

from .defaults import PAPER_GUIDANCE
from .face.detection import DetectedFace
from .pipeline import FaceEncoding, PortraitBoothPipeline
from .prompts import IdentityPrompt

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class DetailerSettings:
    max_face_fraction: float = 0.2  # re-draw faces whose larger box side is under 1/5 of the picture's shorter side
    margin: float = 0.5  # the crop is the face box grown by this share of its side on every side
    strength: float = 0.4  # img2img strength: keeps the face's layout and pose, re-draws its detail
    feather: float = 0.2  # share of the crop's side over which the re-drawn crop fades into the picture


@dataclass(frozen=True)
class DetailedFace:
    face: tuple[float, float, float, float]  # the detected box
    crop: Box  # the pixels that were re-drawn
    person: int  # index of the person whose identity re-drew it


@dataclass
class DetailerReport:
    detailed: list[DetailedFace] = field(default_factory=list)
    big_enough: int = 0  # faces left alone: large enough already
    flagged: int = 0  # re-drawn crops the safety checker flagged, not pasted
    seconds: float = 0.0
    skipped: str | None = None  # why nothing was tried

    def note(self, settings: DetailerSettings) -> str:
        """One sentence for the caption: what the detailer did."""
        limit = f"1/{round(1 / settings.max_face_fraction)}" if settings.max_face_fraction else "0"
        if self.skipped:
            return f"Face detailer skipped: {self.skipped}."
        if not self.detailed:
            found = f"; {self.big_enough} face(s) large enough already" if self.big_enough else ""
            return f"Face detailer ran: no face smaller than {limit} of the picture's side{found}."
        people = ", ".join(f"person {face.person + 1}" for face in self.detailed)
        flagged = f"; {self.flagged} re-drawn face(s) flagged and not used" if self.flagged else ""
        return f"Face detailer ran: re-drew {len(self.detailed)} small face(s) ({people}) in {self.seconds:.1f} s{flagged}."


class FaceDetailer:
    """Re-draws the small faces of pictures made by `pipe` (or of any picture, given identities)."""

    def __init__(self, pipe: PortraitBoothPipeline, settings: DetailerSettings = DetailerSettings()):
        self.pipe = pipe
        self.settings = settings
        self.img2img = pipe.as_diffusers(StableDiffusionImg2ImgPipeline)

    @property
    def native_size(self) -> int:
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    def small_faces(self, image: Image.Image) -> tuple[list[DetectedFace], int]:
        """The faces to re-draw, left to right, and how many faces are large enough already."""
        _, faces = self.pipe._face_analyzer().detect(image)
        limit = self.settings.max_face_fraction * min(image.size)
        small = [face for face in faces if max(face.width, face.height) < limit]
        return sorted(small, key=lambda face: face.box[0]), len(faces) - len(small)

    @torch.no_grad()
    def detail(
        self,
        image: Image.Image,
        prompts: Sequence[IdentityPrompt],
        faces: Sequence[FaceEncoding],
        regions: Sequence[np.ndarray] | None = None,
        *,
        negative_prompt: str | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = PAPER_GUIDANCE,
        seed: int = 0,
    ) -> tuple[Image.Image, DetailerReport]:
        """`image` with its small faces re-drawn, and what was done.

        prompts, faces: one per person (the generation's `output.prompts` and the encodings it used);
        regions: each person's (H, W) weights (`output.regions`); several people without regions (one-pass
            pictures, where the prompt places them) are left as they are, since nothing tells whose face is whose.
        The i-th small face from the left is re-drawn with the generator seed `seed + i`.
        """
        if len(faces) > 1 and regions is None:
            return image, DetailerReport(
                skipped="people placed by the prompt (one pass) have no region to tell whose face is whose"
            )
        started = time.perf_counter()
        small, big_enough = self.small_faces(image)
        report = DetailerReport(big_enough=big_enough)
        result = image.copy()
        for index, face in enumerate(small):
            person = 0 if len(faces) == 1 else _owner(face, regions)
            crop = crop_box(face, image.size, self.settings.margin)
            redrawn = self._redraw(
                image.crop(crop),
                prompts[person],
                faces[person],
                negative_prompt,
                num_inference_steps,
                guidance_scale,
                seed + index,
            )
            if redrawn is None:
                report.flagged += 1
                continue
            paste_feathered(result, redrawn, crop, self.settings.feather)
            report.detailed.append(DetailedFace(face.box, crop, person))
        if report.detailed:
            result = self.pipe.marked([result], "pil")[0]
        report.seconds = time.perf_counter() - started
        return result, report

    def _redraw(
        self,
        crop: Image.Image,
        prompt: IdentityPrompt,
        face: FaceEncoding,
        negative_prompt: str | None,
        steps: int,
        guidance: float,
        seed: int,
    ) -> Image.Image | None:
        """The crop re-diffused at the model's size with the person's identity condition, at the crop's size
        again; None when the safety checker flags it."""
        do_cfg = guidance > 1 and self.pipe.unet.config.time_cond_proj_dim is None
        _, identity, negative = self.pipe.encode_identity_prompt([prompt], face, 1, negative_prompt, do_cfg)
        enlarged = crop.resize((self.native_size, self.native_size), Image.LANCZOS)
        output = self.img2img(
            prompt_embeds=identity,
            negative_prompt_embeds=negative,
            image=enlarged,
            strength=self.settings.strength,
            num_inference_steps=max(steps, math.ceil(1 / self.settings.strength)),  # at least one denoising step
            guidance_scale=guidance,
            generator=torch.Generator("cpu").manual_seed(seed),
        )
        if output.nsfw_content_detected and output.nsfw_content_detected[0]:
            return None
        return output.images[0].resize(crop.size, Image.LANCZOS)


def _owner(face: DetectedFace, regions: Sequence[np.ndarray]) -> int:
    """The person whose region weighs most at the face's centre."""
    x0, y0, x1, y1 = face.box
    height, width = regions[0].shape
    column = min(width - 1, max(0, int((x0 + x1) / 2)))
    row = min(height - 1, max(0, int((y0 + y1) / 2)))
    return int(np.argmax([region[row, column] for region in regions]))


def crop_box(face: DetectedFace, size: tuple[int, int], margin: float) -> Box:
    """A square around the face, its side the face's larger side grown by `margin` on every side,
    moved inside the picture (and no larger than its shorter side)."""
    width, height = size
    x0, y0, x1, y1 = face.box
    side = min(round(max(x1 - x0, y1 - y0) * (1 + 2 * margin)), width, height)
    left = min(max(0, round((x0 + x1 - side) / 2)), width - side)
    top = min(max(0, round((y0 + y1 - side) / 2)), height - side)
    return left, top, left + side, top + side


def feather_mask(width: int, height: int, feather: float) -> np.ndarray:
    """(height, width) weights: 1 inside, falling linearly to 0 over `feather`·side at the border."""
    ramp = max(1.0, feather * min(width, height))
    xs = np.minimum(np.arange(width) + 0.5, width - np.arange(width) - 0.5)
    ys = np.minimum(np.arange(height) + 0.5, height - np.arange(height) - 0.5)
    return np.clip(np.minimum(ys[:, None], xs[None, :]) / ramp, 0.0, 1.0).astype(np.float32)


def paste_feathered(canvas: Image.Image, patch: Image.Image, box: Box, feather: float) -> None:
    """Blend `patch` into `canvas` at `box`, in place; pixels outside `box` are not touched."""
    old = np.asarray(canvas.crop(box), dtype=np.float32)
    weight = feather_mask(patch.width, patch.height, feather)[..., None]
    blended = weight * np.asarray(patch, dtype=np.float32) + (1 - weight) * old
    canvas.paste(Image.fromarray(np.clip(blended.round(), 0, 255).astype(np.uint8)), box[:2])


def detail_images(
    pipe: PortraitBoothPipeline,
    images: Sequence[Image.Image],
    seeds: Sequence[int],
    prompts: Sequence[IdentityPrompt],
    faces: Sequence[FaceEncoding],
    regions: Sequence[np.ndarray] | None = None,
    settings: DetailerSettings = DetailerSettings(),
    **sampling,
) -> tuple[list[Image.Image], list[str]]:
    """Every picture of one generation through the detailer (picture i with seed `seeds[i]`), and one note
    per picture. `sampling`: negative_prompt, num_inference_steps, guidance_scale as the generation had them."""
    detailer = FaceDetailer(pipe, settings)
    done = [
        detailer.detail(image, prompts, faces, regions, seed=seed, **sampling) for image, seed in zip(images, seeds)
    ]
    return [image for image, _ in done], [report.note(settings) for _, report in done]
