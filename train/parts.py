"""The trained modules as one: what `accelerator.prepare` wraps, in every launch mode.

DDP all-reduces the gradients of a module that ran through its wrapper's forward, and accelerate's DeepSpeed
integration builds one engine from one model per `prepare`. So the UNet (or its LoRA), STEA and, when a recipe
trains it, the encoder STEA fuses are prepared once, as `TrainedParts`, whose forward runs all of them. One
code path serves one GPU, DDP and DeepSpeed ZeRO-2 (train/accelerate/deepspeed_zero2.yaml).
"""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.utils import is_deepspeed_available

from portrait.errors import OptionError

from .config import TrainConfig

DEEPSPEED_MISSING = (
    "this launch uses DeepSpeed (its accelerate config or ACCELERATE_USE_DEEPSPEED), which is not installed: "
    "DS_BUILD_OPS=0 pip install 'portraitbooth[deepspeed]'"
)


class TrainedParts(torch.nn.Module):
    """UNet + STEA (+ the fusion encoder): the conditioning and the noise prediction of one training step."""

    def __init__(self, unet: torch.nn.Module, stea: torch.nn.Module, fusion: torch.nn.Module | None = None):
        super().__init__()
        self.unet, self.stea, self.fusion = unet, stea, fusion  # this order is the optimizer's (its saved state)

    @property
    def dtype(self) -> torch.dtype:
        """fp32, but under DeepSpeed's bf16/fp16, which casts the model it trains (its optimizer keeps fp32)."""
        return next(self.stea.parameters()).dtype

    def forward(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor, face_token: torch.Tensor, reference
    ) -> torch.Tensor:
        """The UNet's prediction for `noisy` conditioned by STEA (docs/method.md, "STEA (paper eq. 4)").

        reference: the frozen encoder's features of the reference faces, or, when the encoder trains
        (`fusion`), the reference faces themselves, encoded here so their gradient reaches it."""
        if self.fusion is not None:
            reference = self.fusion(reference.to(self.dtype)).features
        condition = self.stea(text.to(self.dtype), face_token, reference.to(self.dtype))
        return self.unet(noisy.to(self.dtype), timesteps, encoder_hidden_states=condition).sample

    def weights(self) -> dict[str, torch.nn.Module]:
        """The parts named as in a PortraitBooth weights folder."""
        named = {"unet": self.unet, "stea": self.stea}
        return named | ({"fusion_encoder": self.fusion} if self.fusion is not None else {})


def check_deepspeed() -> None:
    """DeepSpeed missing where a launch asks for it: one line, before anything is loaded."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" and not is_deepspeed_available():
        raise OptionError(DEEPSPEED_MISSING)


def fit_deepspeed(accelerator: Accelerator, config: TrainConfig) -> None:
    """The recipe sets DeepSpeed's per-GPU batch and gradient clipping, as it sets mixed precision in every
    launch mode (accelerate cannot read the batch from our step sampler); without DeepSpeed, nothing."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.batch_size
        plugin.deepspeed_config["gradient_clipping"] = config.max_grad_norm


def restore_fp32_weights(accelerator: Accelerator, parts: torch.nn.Module) -> None:
    """Under DeepSpeed's bf16/fp16 the model holds 16-bit copies of the fp32 weights its optimizer trains; this
    puts the fp32 ones back into the trained parameters (gathered from every process's ZeRO partition, so every
    process calls it) for the final save. Without DeepSpeed the trained weights are fp32 already: nothing."""
    if accelerator.state.deepspeed_plugin is None:
        return
    from deepspeed.utils import safe_get_full_fp32_param

    for parameter in parts.parameters():
        if parameter.requires_grad and (full := safe_get_full_fp32_param(parameter)) is not None:
            parameter.data = full.detach().to(parameter.device)
