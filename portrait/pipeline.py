"""PortraitBoothPipeline: Stable Diffusion 1.5 whose text condition carries a face.

The pipeline computes the identity-augmented text condition (CLIP text encoder → STEA with φ's face
feature at the identity token) and hands it to diffusers' own Stable Diffusion denoising loop as
`prompt_embeds`. Schedulers, offloading, VAE slicing/tiling, attention processors, progress bars and
callbacks therefore behave exactly as in diffusers. The unconditional branch is the empty (or
negative) prompt without a face.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput
from transformers import CLIPTextModel, CLIPTokenizer

from .defaults import DEFAULT_DETECTOR, PAPER_GUIDANCE, PAPER_STEPS
from .errors import NoFaceError, OptionError
from .face.analyzer import FaceAnalysis, FaceAnalyzer
from .identity import ClipImageEncoder
from .identity.encoder import IdentityEncoder
from .identity.fastcomposer_image import FastComposerImageEncoder
from .images import ImageInput
from .portrait_weights import PortraitWeightsMixin
from .postfuse import FastComposerFusion
from .prompts import IdentityPrompt, build_identity_prompt, token_index
from .provenance import watermark_images
from .stea import STEA

logger = logging.getLogger(__name__)

MAX_SIDE = 2048  # pixels a side: 16× SD 1.5's native area already; more would take minutes a step and tens of GB


@dataclass
class FaceEncoding:
    """The identity of one person, from one or several reference photos."""

    features: torch.Tensor  # (1, F): mean φ feature of the references, what STEA fuses
    embedding: torch.Tensor  # (1, E): normalised mean recognition embedding
    analyses: list[FaceAnalysis] = field(default_factory=list)


@dataclass
class PortraitBoothPipelineOutput(BaseOutput):
    images: Any
    nsfw_content_detected: list[bool] | None = None
    prompts: list[IdentityPrompt] | None = None  # per prompt; for several people, per person
    faces: list[FaceAnalysis] | None = None
    regions: list[np.ndarray] | None = None  # several people: each person's (H, W) weight mask


class PortraitBoothPipeline(PortraitWeightsMixin, StableDiffusionPipeline):
    """Stable Diffusion with STEA; `fusion_encoder` is the encoder whose face feature STEA fuses: φ in the
    paper's recipe, CLIP's image encoder in the w/o-STEA ablation, FastComposer's for FastComposer."""

    model_cpu_offload_seq = "text_encoder->fusion_encoder->stea->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        stea: STEA | FastComposerFusion,
        fusion_encoder: IdentityEncoder | ClipImageEncoder,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker: bool = False,
    ):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
            image_encoder=image_encoder,
            requires_safety_checker=requires_safety_checker,
        )
        self.register_modules(stea=stea, fusion_encoder=fusion_encoder)
        _check_dimensions(text_encoder, stea, fusion_encoder)
        self.face_analyzer: FaceAnalyzer | None = None  # built on first use unless set
        self.watermark = False  # mark every picture as generated (portrait/provenance.py); the loader turns it on

    @classmethod
    def from_random_preset(cls, preset: str = "tiny", seed: int = 0) -> "PortraitBoothPipeline":
        """The whole pipeline with random weights (see `portrait.presets`): `tiny` runs offline on a CPU."""
        from .presets import build_random_components

        components = build_random_components(preset, seed)
        components["scheduler"] = EulerDiscreteScheduler.from_config(components["scheduler"].config)
        return cls(**components)

    def as_plain_pipeline(self) -> StableDiffusionPipeline:
        """Plain Stable Diffusion sharing these modules: the baseline of benchmarks and evaluations."""
        return self.as_diffusers(StableDiffusionPipeline)

    def as_diffusers(self, kind: type[DiffusionPipeline], **modules) -> DiffusionPipeline:
        """A diffusers Stable Diffusion pipeline of `kind` (plain, img2img, inpainting, ...) sharing these modules
        but for `modules`; it takes this pipeline's identity condition as `prompt_embeds`."""
        components = {
            name: module for name, module in self.components.items() if name not in ("stea", "fusion_encoder")
        }
        pipe = kind(**{**components, **modules}, requires_safety_checker=False)
        pipe.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        return pipe

    def with_modules(self, kind: type["PortraitBoothPipeline"] | None = None, **modules) -> "PortraitBoothPipeline":
        """A pipeline of this class (or `kind`, e.g. the several-people one) sharing this one's modules but
        for `modules` (a scheduler of its own, other weights), with its face analyser and watermarking."""
        pipe = (kind or self.__class__)(**{**self.components, **modules})
        pipe.face_analyzer, pipe.watermark = self.face_analyzer, self.watermark
        pipe.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        return pipe

    # ------------------------------------------------------------------ faces
    def encode_faces(self, faces: ImageInput | FaceAnalysis | Sequence[ImageInput | FaceAnalysis]) -> FaceEncoding:
        """Identity of one person from one photo or several; several photos are averaged."""
        items = list(faces) if isinstance(faces, (list, tuple)) else [faces]
        if not items:
            raise NoFaceError("No reference photo was given")
        analyzer = self._face_analyzer()
        analyses = [item if isinstance(item, FaceAnalysis) else analyzer.analyze(item) for item in items]
        encoder = self.fusion_encoder
        pixels = torch.stack([encoder_input(encoder, analysis) for analysis in analyses]).to(
            self._execution_device, encoder.dtype
        )
        with torch.no_grad():
            identity = encoder(pixels)
        return FaceEncoding(
            features=identity.features.mean(dim=0, keepdim=True),
            embedding=F.normalize(identity.embedding.mean(dim=0, keepdim=True), dim=-1),
            analyses=analyses,
        )

    def _face_analyzer(self) -> FaceAnalyzer:
        if self.face_analyzer is None:
            device = "cuda" if self._execution_device.type == "cuda" else "cpu"
            self.face_analyzer = FaceAnalyzer.load(DEFAULT_DETECTOR, device=device)
        return self.face_analyzer

    # ------------------------------------------------------------------ conditions
    def identity_prompts(
        self,
        prompt: str | Sequence[str],
        identity_word: str | None = None,
        identity_occurrence: int | None = None,
        expression: str | None = None,
    ) -> list[IdentityPrompt]:
        config = self.stea.config
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        return [
            build_identity_prompt(
                text, identity_word, identity_occurrence, expression, config.identity_words, config.emotion_words
            )
            for text in prompts
        ]

    def encode_identity_prompt(
        self,
        prompts: Sequence[IdentityPrompt],
        face: FaceEncoding | None,
        num_images_per_prompt: int = 1,
        negative_prompt: str | Sequence[str] | None = None,
        do_classifier_free_guidance: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(text condition, identity-augmented condition, negative condition), each (B·n, 77, D).

        With `face=None` the identity condition equals the text condition (text-only sampling).
        """
        if isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * len(prompts)
        text_embeds, negative_embeds = self.encode_prompt(
            [p.text for p in prompts],
            self._execution_device,
            num_images_per_prompt,
            do_classifier_free_guidance,
            negative_prompt,
        )
        if face is None:
            return text_embeds, text_embeds, negative_embeds
        return text_embeds, self.add_identity(text_embeds, prompts, face, num_images_per_prompt), negative_embeds

    def add_identity(
        self,
        embeds: torch.Tensor,
        prompts: Sequence[IdentityPrompt],
        face: FaceEncoding,
        num_images_per_prompt: int = 1,
    ) -> torch.Tensor:
        """STEA at each prompt's identity token: `embeds` holds `num_images_per_prompt` rows per prompt."""
        device = embeds.device
        indices = torch.tensor([token_index(self.tokenizer, p.text, p.identity_span) for p in prompts], device=device)
        indices = indices.repeat_interleave(num_images_per_prompt)
        features = face.features.to(device, self.stea.dtype).expand(embeds.shape[0], -1)
        with torch.no_grad():
            return self.stea(embeds.to(self.stea.dtype), indices, features).to(embeds.dtype)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        face_image: ImageInput | Sequence[ImageInput] | None = None,
        *,
        face: FaceEncoding | None = None,
        identity_word: str | None = None,
        identity_occurrence: int | None = None,
        expression: str | None = None,
        identity_start: float | None = None,
        negative_prompt: str | Sequence[str] | None = None,
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
        **kwargs,
    ) -> PortraitBoothPipelineOutput | tuple:
        """Generate portraits of the person in `face_image` (one photo, or several of the same person).

        Args:
            prompt (`str` or `List[str]`):
                The prompt or prompts; the identity word in each receives the face.
            face_image (`ImageInput` or `List[ImageInput]`, *optional*):
                One reference photo, or several of the same person (their identities are averaged).
            face (`FaceEncoding`, *optional*):
                A precomputed `encode_faces` result, instead of `face_image`.
            identity_word (`str`, *optional*):
                The prompt's word that receives the face. Default: the first identity word in the prompt; a prompt
                without one gets "a photo of a <word>, " in front.
            identity_occurrence (`int`, *optional*):
                Which occurrence of that word, 0-based. Default: the first.
            expression (`str`, *optional*):
                One of the emotion words, written before the identity word.
            identity_start (`float`, *optional*):
                Fraction of the steps that use the plain text condition before the face is added; higher values
                follow the prompt more and the face less. Default: the identity model's (0 for PortraitBooth, as
                the paper; for FastComposer its demo's delayed conditioning, α = 0.75: 0.26 at 50 steps).
            negative_prompt (`str` or `List[str]`, *optional*):
                What the unconditional branch steers away from (no face there).
            num_inference_steps (`int`, defaults to 50):
                Denoising steps (the paper's 50).
            guidance_scale (`float`, defaults to 5.0):
                Classifier-free guidance scale (the paper's 5); 1 or less turns guidance off.
            num_images_per_prompt (`int`, defaults to 1):
                Images per prompt.
            height (`int`, *optional*), width (`int`, *optional*):
                Size in pixels, multiples of 8 up to 2048. Default: the UNet's native size.
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*):
                Seeds the initial noise (one generator per image for per-image seeds).
            output_type (`str`, defaults to `"pil"`):
                `"pil"`, `"np"`, `"pt"` or `"latent"`; pictures (not latents) are watermarked when the pipeline is.
            return_dict (`bool`, defaults to `True`):
                Return a `PortraitBoothPipelineOutput` rather than a tuple.
            callback_on_step_end (`Callable`, *optional*), callback_on_step_end_tensor_inputs (`List[str]`):
                As in `StableDiffusionPipeline.__call__`.
            **kwargs:
                Passed to `StableDiffusionPipeline.__call__` (e.g. `latents`, `eta`, `cross_attention_kwargs`).

        Returns:
            `PortraitBoothPipelineOutput` or `tuple`: the images, the safety checker's flags, and per prompt the
            placed identity prompt and the analysed reference faces; a tuple `(images, nsfw_content_detected)` when
            `return_dict` is `False`.
        """
        if identity_start is None:
            identity_start = self.stea.default_identity_start(num_inference_steps)
        check_sampling(identity_start, num_inference_steps, num_images_per_prompt, height, width, guidance_scale)
        if face is None:
            if face_image is None:
                raise NoFaceError("Give a reference photo (face_image) or a precomputed face encoding (face)")
            face = self.encode_faces(face_image)
        prompts = self.identity_prompts(prompt, identity_word, identity_occurrence, expression)
        for notice in {p.notice for p in prompts if p.notice}:
            logger.info(notice)
        do_cfg = guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None
        text_embeds, identity_embeds, negative_embeds = self.encode_identity_prompt(
            prompts, face, num_images_per_prompt, negative_prompt, do_cfg
        )
        start_step = round(identity_start * num_inference_steps)
        callback, tensor_inputs = _with_identity_switch(
            start_step, identity_embeds, callback_on_step_end, callback_on_step_end_tensor_inputs
        )
        result = super().__call__(
            prompt_embeds=identity_embeds if start_step == 0 else text_embeds,
            negative_prompt_embeds=negative_embeds,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            num_images_per_prompt=1,  # the conditions are already repeated per image
            height=height,
            width=width,
            generator=generator,
            output_type=output_type,
            return_dict=True,
            callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=tensor_inputs,
            **kwargs,
        )
        images = self.marked(result.images, output_type)
        output = PortraitBoothPipelineOutput(images, result.nsfw_content_detected, prompts, face.analyses)
        return output if return_dict else (output.images, output.nsfw_content_detected)

    def marked(self, images, output_type: str):
        """The watermark in every picture, when this pipeline marks them (pictures only, not latents)."""
        return watermark_images(images) if self.watermark and output_type in ("pil", "np") else images


def check_sampling(
    identity_start: float,
    num_inference_steps: int,
    num_images: int,
    height: int | None,
    width: int | None,
    guidance_scale: float = PAPER_GUIDANCE,
) -> None:
    """Refuse, with a sentence, the numbers diffusers would fail on (or silently make noise with).
    NaN fails every comparison, so it is refused with the rest."""
    if not 0.0 <= guidance_scale < float("inf"):
        raise OptionError(f"The guidance scale must be a number from 0 up, got {guidance_scale}")
    if not 0.0 <= identity_start <= 1.0:
        raise OptionError(f"identity_start must be between 0 and 1, got {identity_start}")
    if num_inference_steps < 1 or num_images < 1:
        raise OptionError(f"Steps and number of images must be at least 1, got {num_inference_steps} and {num_images}")
    for name, value in (("height", height), ("width", width)):
        if value is not None and not (8 <= value <= MAX_SIDE and value % 8 == 0):
            raise OptionError(f"The {name} must be a multiple of 8 from 8 to {MAX_SIDE} pixels, got {value}")


def encoder_input(encoder, analysis: FaceAnalysis) -> torch.Tensor:
    """What `encoder` reads of a face: FastComposer's CLIP its own square crop, φ and the ablation's CLIP the aligned face."""
    if isinstance(encoder, FastComposerImageEncoder):
        return encoder.reference_pixels(analysis)
    return analysis.aligned


def _with_identity_switch(
    start_step: int,
    identity_embeds: torch.Tensor,
    user_callback: Callable | None,
    user_inputs: Sequence[str],
) -> tuple[Callable | None, list[str]]:
    """A step-end callback that swaps in the identity condition after `start_step` steps, then runs
    the caller's callback. Under CFG diffusers keeps [negative; positive] in one tensor: only the
    positive half is replaced."""
    user_inputs = list(getattr(user_callback, "tensor_inputs", None) or user_inputs)
    if start_step == 0:
        return user_callback, user_inputs

    def callback(pipe, step: int, timestep, tensors: dict) -> dict:
        outputs: dict = {}
        if step + 1 == start_step:
            current = tensors["prompt_embeds"]
            negative_half = current[: current.shape[0] - identity_embeds.shape[0]]
            outputs["prompt_embeds"] = torch.cat([negative_half, identity_embeds.to(current)])
            tensors = {**tensors, **outputs}
        if user_callback is not None:
            user_tensors = {name: tensors[name] for name in user_inputs}
            outputs.update(user_callback(pipe, step, timestep, user_tensors) or {})
        return outputs

    return callback, list(dict.fromkeys(user_inputs + ["prompt_embeds"]))


def _check_dimensions(text_encoder, stea: STEA, fusion_encoder: IdentityEncoder) -> None:
    text_dim = text_encoder.config.hidden_size
    if stea.config.text_dim != text_dim:
        raise ValueError(f"STEA expects {stea.config.text_dim}-d text features; the text encoder gives {text_dim}")
    if stea.config.identity_dim != fusion_encoder.feature_dim:
        raise ValueError(
            f"STEA expects {stea.config.identity_dim}-d identity features ({stea.config.fusion_encoder}, "
            f"{stea.config.feature_layer}); the fusion encoder gives {fusion_encoder.feature_dim}"
        )
