"""Pose and layout from a picture: SD 1.5 ControlNets (diffusers' ControlNetModel) with one or two people.

A control map is made from a reference picture: Canny edges with OpenCV (offline, no weights), an OpenPose
skeleton (the controlnet_aux annotator with lllyasviel's body_pose_model.pth) or a depth map (DPT-Hybrid
MiDaS through transformers), each used only when its weights are here. The ControlNet then adds its
residuals to the UNet's at every call: `ControlledUNet` stands in for the UNet of any pipeline built from
the same modules (`with_modules(unet=...)`), so the one-person pipeline (with `identity_start`) and the
several-people pipeline (every branch of its batched call) are controlled alike, with the identity in
`prompt_embeds` as always (docs/method.md).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from PIL import Image

from .errors import MissingWeightsError, OptionError
from .loading import WeightFile, resolve_pretrained, resolve_weight_file
from .pipeline import PortraitBoothPipeline

CANNY_THRESHOLDS = (100, 200)  # OpenCV's hysteresis thresholds, as the canny ControlNet was trained with
CONTROLNET_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
OPENPOSE_WEIGHTS = WeightFile(
    "body_pose_model.pth",
    "OpenPose body annotator (lllyasviel/Annotators)",
    "https://huggingface.co/lllyasviel/Annotators/resolve/main/body_pose_model.pth",
)
DEPTH_ANNOTATOR = "Intel/dpt-hybrid-midas"


@dataclass(frozen=True)
class Control:
    controlnet: str  # SD 1.5 ControlNet: hub id or folder
    annotator: str  # what makes the control map from a picture, in words


CONTROLS = {
    "canny": Control("lllyasviel/control_v11p_sd15_canny", "Canny edges (OpenCV, no weights)"),
    "openpose": Control(
        "lllyasviel/control_v11p_sd15_openpose", f"OpenPose ({OPENPOSE_WEIGHTS.filename}, controlnet_aux)"
    ),
    "depth": Control("lllyasviel/control_v11f1p_sd15_depth", f"depth ({DEPTH_ANNOTATOR}, transformers)"),
}


def control_weights() -> list[tuple[str, str]]:
    """(what, where) for every weight the controls use: the list `portrait weights` can show."""
    rows = [(f"ControlNet {kind}", control.controlnet) for kind, control in CONTROLS.items()]
    return rows + [("OpenPose annotator", OPENPOSE_WEIGHTS.filename), ("depth annotator", DEPTH_ANNOTATOR)]


def _check_kind(kind: str) -> Control:
    if kind not in CONTROLS:
        raise OptionError(f"Unknown control {kind!r}; choose one of: {', '.join(CONTROLS)}")
    return CONTROLS[kind]


def control_map(kind: str, picture: Image.Image, weights_dir: str | Path | None = None) -> Image.Image:
    """The control map of `picture` for `kind` (canny, openpose, depth), an RGB image of the same size."""
    _check_kind(kind)
    if kind == "canny":
        edges = cv2.Canny(np.asarray(picture.convert("L")), *CANNY_THRESHOLDS)
        return Image.fromarray(edges).convert("RGB")
    if kind == "openpose":
        return _openpose(picture, weights_dir)
    return _depth(picture)


def _openpose(picture: Image.Image, weights_dir: str | Path | None) -> Image.Image:
    weights = resolve_weight_file(OPENPOSE_WEIGHTS, weights_dir)  # one line naming the file when it is missing
    if importlib.util.find_spec("controlnet_aux") is None:
        raise MissingWeightsError("The OpenPose annotator needs the controlnet_aux package: pip install controlnet-aux")
    from controlnet_aux import OpenposeDetector

    detector = OpenposeDetector.from_pretrained(str(weights.parent), filename=weights.name)
    return detector(picture).convert("RGB").resize(picture.size)


def _depth(picture: Image.Image) -> Image.Image:
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    folder = resolve_pretrained(
        DEPTH_ANNOTATOR,
        "Depth annotator",
        required=("config.json", "preprocessor_config.json", "model.safetensors"),
        extra_patterns=(),
    )
    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModelForDepthEstimation.from_pretrained(folder, use_safetensors=True).eval()
    with torch.no_grad():
        depth = model(**processor(images=picture, return_tensors="pt")).predicted_depth
    depth = torch.nn.functional.interpolate(depth[:, None], size=picture.size[::-1], mode="bicubic")[0, 0]
    depth = (depth - depth.min()) / (depth.max() - depth.min()).clamp_min(1e-8)
    return Image.fromarray((depth.numpy() * 255).round().astype(np.uint8)).convert("RGB")


def load_controlnet(
    kind: str, pipe: PortraitBoothPipeline, random_weights: bool = False, seed: int = 0
) -> ControlNetModel:
    """SD 1.5's ControlNet for `kind` in the pipeline's precision; `random_weights`: a random one shaped from
    the pipeline's UNet (the random-weight presets)."""
    control = _check_kind(kind)
    if random_weights:
        controlnet = random_controlnet(pipe.unet, seed)
    else:
        folder = resolve_pretrained(
            control.controlnet, f"ControlNet ({kind})", required=CONTROLNET_FILES, extra_patterns=()
        )
        controlnet = ControlNetModel.from_pretrained(folder, use_safetensors=True, torch_dtype=pipe.unet.dtype)
    if controlnet.dtype != pipe.unet.dtype:
        controlnet = controlnet.to(dtype=pipe.unet.dtype)
    return controlnet.to(pipe.device).eval()


def random_controlnet(unet: UNet2DConditionModel, seed: int = 0) -> ControlNetModel:
    """A ControlNet built from `unet`'s configuration and weights, its zero convolutions made random (a trained
    ControlNet's are no longer zero), so that it changes pictures as a real one does. The map's embedding ends
    in unit-variance weights: with default ones a random model's pictures barely depend on the map itself."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet = ControlNetModel.from_unet(unet)
        for layer in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            layer.reset_parameters()
        torch.nn.init.normal_(controlnet.controlnet_cond_embedding.conv_out.weight, std=1.0)
    return controlnet


def condition_tensor(control_image: Image.Image, width: int, height: int) -> torch.Tensor:
    """(1, 3, height, width) in [0, 1]: the control map at the picture's size, as ControlNets take it."""
    resized = control_image.convert("RGB").resize((width, height), Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


class ControlledUNet(torch.nn.Module):
    """The UNet with a ControlNet's residuals added at every call; everything else (config, dtype, LoRA
    methods) is the UNet's own, so any Stable Diffusion pipeline can use it in the UNet's place."""

    def __init__(
        self, unet: UNet2DConditionModel, controlnet: ControlNetModel, condition: torch.Tensor, scale: float = 1.0
    ):
        super().__init__()
        self.unet, self.controlnet = unet, controlnet
        self.condition, self.scale = condition, scale

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, **kwargs):
        condition = self.condition.to(sample.device, self.controlnet.dtype).expand(sample.shape[0], -1, -1, -1)
        down, mid = self.controlnet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, controlnet_cond=condition,
            conditioning_scale=self.scale, return_dict=False,
        )  # fmt: skip
        return self.unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, down_block_additional_residuals=down,
            mid_block_additional_residual=mid, **kwargs,
        )  # fmt: skip

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["unet"], name)


def controlled(
    pipe: PortraitBoothPipeline,
    controlnet: ControlNetModel,
    control_image: Image.Image,
    width: int | None = None,
    height: int | None = None,
    scale: float = 1.0,
) -> PortraitBoothPipeline:
    """A pipeline of `pipe`'s class sharing its modules, whose UNet is steered by `controlnet` and `control_image`
    (a control map) at `scale`, for pictures of width × height. Its `with_modules(PortraitBoothPeoplePipeline)`
    is the several-people pipeline under the same control."""
    if not 0.0 <= scale <= 2.0:
        raise OptionError(f"The control scale must be between 0 and 2, got {scale}")
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    condition = condition_tensor(control_image, width or native, height or native)
    return pipe.with_modules(unet=ControlledUNet(pipe.unet, controlnet, condition, scale))
