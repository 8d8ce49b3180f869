"""Several people in one picture, in one of two modes (`people_mode`):

- `one-pass` (FastComposer's way, its default): one prompt holds every face at its own word, and each
  step is one ordinary guided UNet pass; the prompt alone places the people.
- `regions` (MultiDiffusion, the paper's way, PortraitBooth's default), below.

PortraitBooth trains on one person per image; two people are composed at inference. In regions mode every step
predicts the noise of the whole canvas once per branch, all branches in one batched UNet call:
- the scene branch: the scene prompt with every person's face at their own identity word;
- one branch per person: the scene prompt with only that person's face;
- the unconditional branch (empty or negative prompt, no face), shared by all branches.
Classifier-free guidance is applied per branch, then the guided predictions are averaged with
per-pixel weights: the scene weight everywhere, each person's region mask where they stand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .defaults import PAPER_GUIDANCE, PAPER_STEPS
from .errors import OptionError
from .pipeline import (
    FaceEncoding,
    PortraitBoothPipeline,
    PortraitBoothPipelineOutput,
    check_sampling,
)
from .prompts import build_subject_prompts

PEOPLE_MODES = ("one-pass", "regions")
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the canvas width and height
Region = Union[Box, np.ndarray, torch.Tensor, Image.Image]  # a box, or a mask of any size in [0, 1] (or 0/255)


@dataclass
class Person:
    face: FaceEncoding
    identity_word: str | None = None  # default: the next man/woman of the prompt, in order of appearance
    expression: str | None = None
    region: Region | None = None  # default: side-by-side strips (see default_regions)


def default_regions(count: int, height: int, width: int, split: float = 0.5, overlap: float = 0.1) -> list[np.ndarray]:
    """Side-by-side vertical strips, left to right, with linear ramps of `overlap`·width at each border.

    Two people split at `split` (a fraction of the width); more people get equal strips.
    """
    if not 0.0 < split < 1.0 or not 0.0 <= overlap < 1.0:
        raise OptionError(f"split must be in (0, 1) and overlap in [0, 1), got {split} and {overlap}")
    borders = [split] if count == 2 else [index / count for index in range(1, count)]
    x = (np.arange(width, dtype=np.float32) + 0.5) / width
    ramps = [
        np.clip((x - border) / overlap + 0.5, 0, 1) if overlap else (x >= border).astype(np.float32)
        for border in borders
    ]
    # right[j]: how much of each column lies right of border j; the canvas edges are borders 0 and count.
    right = [np.ones_like(x)] + ramps + [np.zeros_like(x)]
    columns = [right[index] - right[index + 1] for index in range(count)]
    return [np.broadcast_to(column, (height, width)).astype(np.float32) for column in columns]


def region_mask(region: Region, height: int, width: int) -> np.ndarray:
    """(height, width) float32 weights in [0, 1] for a box (canvas fractions) or a mask of any size."""
    if isinstance(region, tuple | list) and len(region) == 4:
        x0, y0, x1, y1 = (float(v) for v in region)
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise OptionError(f"A region box is x0,y0,x1,y1 in canvas fractions with x0<x1, y0<y1; got {region}")
        xs = (np.arange(width) + 0.5) / width
        ys = (np.arange(height) + 0.5) / height
        return (((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]).astype(np.float32)
    if isinstance(region, Image.Image):
        region = np.asarray(region.convert("L"), dtype=np.float32) / 255.0
    mask = torch.as_tensor(np.asarray(region, dtype=np.float32))
    if mask.ndim != 2:
        raise OptionError(f"A region mask must be two-dimensional, got shape {tuple(mask.shape)}")
    if mask.max() > 1:
        mask = mask / 255.0
    if mask.shape != (height, width):
        mask = F.interpolate(mask[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return mask.clamp(0, 1).numpy()


def describe_region(mask: np.ndarray) -> str:
    """Where a mask mostly lies, in canvas fractions, for telling a user which face went where."""
    rows, columns = np.nonzero(mask >= 0.5)
    if rows.size == 0:
        return "nowhere (empty region)"
    height, width = mask.shape
    return (
        f"x {columns.min() / width:.2f}–{(columns.max() + 1) / width:.2f}, "
        f"y {rows.min() / height:.2f}–{(rows.max() + 1) / height:.2f}"
    )


def latent_weights(masks: Sequence[np.ndarray], latent_size: tuple[int, int]) -> torch.Tensor:
    """(R, h, w) weights at latent resolution: each latent pixel gets the mean of the pixels it covers."""
    stacked = torch.from_numpy(np.stack(masks)).float()[:, None]
    return F.interpolate(stacked, size=latent_size, mode="area")[:, 0]


def fuse_regions(predictions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """MultiDiffusion's rule: Σ_r w_r·ε_r / Σ_r w_r per pixel.

    predictions: (R, B, C, h, w); weights: (R, h, w), non-negative. Pixels no region covers get 0.
    """
    w = weights[:, None, None].to(predictions)
    return (w * predictions).sum(dim=0) / w.sum(dim=0).clamp_min(1e-12)


class PortraitBoothPeoplePipeline(PortraitBoothPipeline):
    """Several people in one picture, with the single-person pipeline's call surface.

    Build it over an existing pipeline's modules with `pipe.with_modules(PortraitBoothPeoplePipeline)`
    (no copy; diffusers' `from_pipe` works too, as for its panorama pipeline). `callback_on_step_end` gets the standard
    arguments; its tensors are `latents` and `prompt_embeds` (every branch's condition, stacked as
    [unconditional (with guidance); scene; person 1; ...]), and it may replace them.
    """

    _callback_tensor_inputs = ["latents", "prompt_embeds"]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        people: Sequence[Person],
        *,
        negative_prompt: str | None = None,
        num_inference_steps: int = PAPER_STEPS,
        guidance_scale: float = PAPER_GUIDANCE,
        num_images_per_prompt: int = 1,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        identity_start: float | None = None,
        people_mode: str | None = None,
        scene_weight: float = 0.3,
        split: float = 0.5,
        overlap: float = 0.1,
    ) -> PortraitBoothPipelineOutput | tuple:
        """One picture of several people; `output.prompts[i]` (and in regions mode `output.regions[i]`) say
        where person i went.

        Args:
            prompt (`str`):
                The scene, naming each person by an identity word ("a man and a woman in front of a bar").
            people (`List[Person]`):
                Each with a face encoding, and optionally an identity word, an expression and a region (a box in
                canvas fractions or a mask; regions mode only).
            negative_prompt (`str`, *optional*):
                What the unconditional branch steers away from.
            num_inference_steps (`int`, defaults to 50), guidance_scale (`float`, defaults to 5.0):
                As in `PortraitBoothPipeline.__call__` (the paper's settings).
            num_images_per_prompt (`int`, defaults to 1), height (`int`, *optional*), width (`int`, *optional*),
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*), output_type (`str`, defaults to
            `"pil"`), return_dict (`bool`, defaults to `True`), callback_on_step_end (`Callable`, *optional*),
            callback_on_step_end_tensor_inputs (`List[str]`):
                As in `PortraitBoothPipeline.__call__`.
            identity_start (`float`, *optional*):
                Fraction of the steps before the faces are added. Default: the identity model's.
            people_mode (`str`, *optional*):
                `"one-pass"` (every face in one prompt, one UNet pass per step) or `"regions"` (MultiDiffusion).
                Default: the identity model's (regions for PortraitBooth, one-pass for FastComposer).
            scene_weight (`float`, defaults to 0.3):
                Regions mode: the weight of the scene branch (the whole prompt with every face) everywhere.
            split (`float`, defaults to 0.5), overlap (`float`, defaults to 0.1):
                Regions mode: default regions are side-by-side strips split at `split` (a fraction of the width)
                with a soft border `overlap` wide.

        Returns:
            `PortraitBoothPipelineOutput` or `tuple`: as `PortraitBoothPipeline.__call__`, with one placed prompt
            per person, and each person's weight mask in `regions` (regions mode).
        """
        people_mode = people_mode or self.stea.default_people_mode
        if people_mode not in PEOPLE_MODES:
            raise OptionError(f"people_mode must be one of {', '.join(PEOPLE_MODES)}, got {people_mode!r}")
        regions = people_mode == "regions"
        if scene_weight <= 0:
            raise OptionError("scene_weight must be positive: the scene prompt has to cover the whole canvas")
        if not regions and any(person.region is not None for person in people):
            raise OptionError("Regions place people in regions mode only; in one-pass mode the prompt places them")
        if identity_start is None:
            identity_start = self.stea.default_identity_start(num_inference_steps)
        check_sampling(identity_start, num_inference_steps, num_images_per_prompt, height, width, guidance_scale)
        config = self.stea.config
        prompts = build_subject_prompts(
            prompt,
            [p.identity_word for p in people],
            [p.expression for p in people],
            config.identity_words,
            config.emotion_words,
        )
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        self.check_inputs(
            prompts[0].text, height, width, None, callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs
        )
        self._guidance_scale = guidance_scale
        self._interrupt = False
        masks = [
            region_mask(person.region, height, width) if person.region is not None else default
            for person, default in zip(people, default_regions(len(people), height, width, split, overlap))
        ] if regions else []  # fmt: skip
        device = self._execution_device
        with_faces, text_only = self._branch_conditions(
            prompts, people, negative_prompt, num_images_per_prompt, regions
        )
        start_step = round(identity_start * num_inference_steps)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        latents = self.prepare_latents(
            num_images_per_prompt, self.unet.config.in_channels, height, width, with_faces.dtype, device, generator
        )
        scene = np.full((height, width), scene_weight, np.float32)
        weights = latent_weights([scene, *masks], tuple(latents.shape[-2:])).to(device)
        step_kwargs = self.prepare_extra_step_kwargs(generator, 0.0)
        with self.progress_bar(total=num_inference_steps) as progress:
            for step, timestep in enumerate(timesteps):
                if self.interrupt:
                    break
                prompt_embeds = with_faces if step >= start_step else text_only
                noise = self.fused_noise(latents, timestep, prompt_embeds, weights)
                latents = self.scheduler.step(noise, timestep, latents, **step_kwargs, return_dict=False)[0]
                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "prompt_embeds": prompt_embeds}
                    replaced = (
                        callback_on_step_end(
                            self, step, timestep, {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                        )
                        or {}
                    )
                    latents = replaced.get("latents", latents)
                    if "prompt_embeds" in replaced:
                        with_faces = text_only = replaced["prompt_embeds"]
                progress.update()
        flagged = None
        if output_type == "latent":
            images = latents
        else:
            decoded = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
            decoded, flagged = self.run_safety_checker(decoded, device, with_faces.dtype)
            denormalize = None if flagged is None else [not flag for flag in flagged]
            images = self.marked(
                self.image_processor.postprocess(decoded, output_type=output_type, do_denormalize=denormalize),
                output_type,
            )
        self.maybe_free_model_hooks()
        faces = [analysis for person in people for analysis in person.face.analyses]
        output = PortraitBoothPipelineOutput(images, flagged, prompts, faces, masks or None)
        return output if return_dict else (output.images, output.nsfw_content_detected)

    def _branch_conditions(
        self,
        prompts: list,
        people: Sequence[Person],
        negative_prompt: str | None,
        num_images: int,
        regions: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(with faces, text only): [unconditional (with guidance); scene; person 1; ...], each `num_images` rows;
        one-pass mode (`regions=False`) has no person branches.

        The scene branch holds every person's face at their own word; each person's branch only theirs.
        """
        negative = [negative_prompt] if negative_prompt is not None else None
        device = self._execution_device
        text, unconditional = self.encode_prompt(
            [prompts[0].text], device, num_images, self.do_classifier_free_guidance, negative
        )
        personal = (
            [self.add_identity(text, [p], person.face, num_images) for p, person in zip(prompts, people)]
            if regions
            else []
        )
        scene = text
        for identity_prompt, person in zip(prompts, people):
            scene = self.add_identity(scene, [identity_prompt], person.face, num_images)
        first = [unconditional] if self.do_classifier_free_guidance else []
        return torch.cat([*first, scene, *personal]), torch.cat([*first, *[text] * (1 + len(personal))])

    def fused_noise(
        self, latents: torch.Tensor, timestep: torch.Tensor, conditions: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """Fused noise prediction of one step: every branch in one UNet call, guidance per branch, then fusion.

        conditions: (branches·B, L, D) ordered [unconditional (with guidance); scene; person 1; ...];
        weights: (regions, h, w) for [scene; person 1; ...].
        """
        branches = conditions.shape[0] // latents.shape[0]
        model_input = self.scheduler.scale_model_input(latents, timestep).repeat(branches, 1, 1, 1)
        predictions = self.unet(model_input, timestep, encoder_hidden_states=conditions, return_dict=False)[0]
        predictions = torch.stack(predictions.chunk(branches))  # (branches, B, C, h, w)
        if self.do_classifier_free_guidance:
            unconditional, predictions = predictions[0], predictions[1:]
            predictions = unconditional + self.guidance_scale * (predictions - unconditional)
        return (
            fuse_regions(predictions, weights) if weights.shape[0] > 1 else predictions[0]
        )  # one-pass: the scene alone
