"""Your face in your photo: a person rendered inside a region of a photo (inpainting), or the whole photo restyled.

Both are diffusers' own Stable Diffusion pipelines built from PortraitBooth's modules (`as_diffusers`),
given the identity-augmented text condition as `prompt_embeds` (STEA at the identity token, docs/method.md):
- inpainting with the base UNet (4 input channels): diffusers' StableDiffusionInpaintPipeline then blends
  latents, so at every step the latents outside the mask are replaced by the photo's latents noised to that
  step. The masked area is cropped with padding and worked on at the model's size, and pasted back into the
  photo at its own resolution; pixels outside the mask are the photo's own.
- img2img: the whole photo, at about the model's number of pixels, re-diffused from `strength` (0 keeps it).
The default region is the photo's largest face with a margin (hair, chin, ears).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
from PIL import Image

from .defaults import PAPER_GUIDANCE, PAPER_STEPS
from .errors import NoFaceError, OptionError
from .multi import region_mask
from .pipeline import FaceEncoding, PortraitBoothPipeline, PortraitBoothPipelineOutput, check_sampling

FACE_REGION = "face"  # the mask that means: the photo's largest face, grown by FACE_MARGIN
FACE_MARGIN = 0.35  # share of the face box's side added on every side
CROP_PADDING = 32  # pixels of context around the masked area that the inpainting sees
RESTYLE_STRENGTH, INPAINT_STRENGTH = 0.6, 1.0


def face_region(pipe: PortraitBoothPipeline, photo: Image.Image, margin: float = FACE_MARGIN) -> Image.Image:
    """A white rectangle over the photo's largest face, grown by `margin`, on black: the default region."""
    _, faces = pipe._face_analyzer().detect(photo)
    if not faces:
        raise NoFaceError("No face found in the photo to edit; draw the region (a mask) where the person should go")
    x0, y0, x1, y1 = faces[0].box
    grow_x, grow_y = (x1 - x0) * margin, (y1 - y0) * margin
    mask = np.zeros((photo.height, photo.width), np.uint8)
    top, bottom = max(0, round(y0 - grow_y)), min(photo.height, round(y1 + grow_y))
    left, right = max(0, round(x0 - grow_x)), min(photo.width, round(x1 + grow_x))
    mask[top:bottom, left:right] = 255
    return Image.fromarray(mask)


def working_size(size: tuple[int, int], native: int, step: int = 8) -> tuple[int, int]:
    """(width, height) of about native² pixels in the photo's shape, multiples of `step`."""
    width, height = size
    scale = native / (width * height) ** 0.5
    return max(step, round(width * scale / step) * step), max(step, round(height * scale / step) * step)


@torch.no_grad()
def edit_photo(
    pipe: PortraitBoothPipeline,
    photo: Image.Image,
    prompt: str,
    face: FaceEncoding,
    mask: Image.Image | np.ndarray | str | None = None,
    *,
    strength: float | None = None,
    identity_word: str | None = None,
    expression: str | None = None,
    negative_prompt: str | None = None,
    num_inference_steps: int = PAPER_STEPS,
    guidance_scale: float = PAPER_GUIDANCE,
    num_images_per_prompt: int = 1,
    generator: torch.Generator | list[torch.Generator] | None = None,
    callback_on_step_end: Callable | None = None,
    callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
) -> PortraitBoothPipelineOutput:
    """The person of `face` in `photo`: inside `mask` (an image or array, white = where; `FACE_REGION` = the
    photo's face) by inpainting, or, with `mask=None`, the whole photo restyled by img2img.

    strength: how much is re-drawn, 0 to 1 (default 1.0 inpainting, 0.6 restyling); 0 returns the photo.
    Pictures come back at the photo's size (inpainting, strength 0) or at about the model's size (restyling).
    """
    strength = (RESTYLE_STRENGTH if mask is None else INPAINT_STRENGTH) if strength is None else strength
    if not 0.0 <= strength <= 1.0:
        raise OptionError(f"The strength must be between 0 and 1, got {strength}")
    check_sampling(0.0, num_inference_steps, num_images_per_prompt, None, None, guidance_scale)
    prompts = pipe.identity_prompts(prompt, identity_word, None, expression)
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    if strength == 0.0:  # nothing re-drawn: diffusers would run no step at all
        return PortraitBoothPipelineOutput(
            [photo.copy() for _ in range(num_images_per_prompt)], None, prompts, face.analyses
        )
    if mask is None:
        photo = photo.resize(working_size(photo.size, native), Image.LANCZOS)
    do_cfg = guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
    _, identity, negative = pipe.encode_identity_prompt(prompts, face, num_images_per_prompt, negative_prompt, do_cfg)
    common = dict(
        prompt_embeds=identity,
        negative_prompt_embeds=negative,
        image=photo,
        strength=strength,
        # at least one step is left after strength cuts the schedule
        num_inference_steps=max(num_inference_steps, int(np.ceil(1 / strength))),
        guidance_scale=guidance_scale,
        generator=generator,
        callback_on_step_end=callback_on_step_end,
        callback_on_step_end_tensor_inputs=list(callback_on_step_end_tensor_inputs),
    )
    if mask is None:
        result = pipe.as_diffusers(StableDiffusionImg2ImgPipeline)(**common)
    else:
        if isinstance(mask, str):
            if mask != FACE_REGION:
                raise OptionError(f"A mask is an image or {FACE_REGION!r}, got {mask!r}")
            mask = face_region(pipe, photo)
        weights = region_mask(mask, photo.height, photo.width)
        if weights.max() < 0.5:
            raise OptionError("The mask is empty: paint (white) where the person should go")
        mask_image = Image.fromarray((weights * 255).round().astype(np.uint8))
        inpaint = pipe.as_diffusers(StableDiffusionInpaintPipeline)
        result = inpaint(**common, mask_image=mask_image, height=native, width=native, padding_mask_crop=CROP_PADDING)
    images = pipe.marked(result.images, "pil")
    return PortraitBoothPipelineOutput(images, result.nsfw_content_detected, prompts, face.analyses)
