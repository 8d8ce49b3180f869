"""What lets the paper's recipe fit one GPU: a LoRA on the UNet, 8-bit AdamW, TF32.

Full fine-tuning keeps the UNet's fp32 weights, gradients and two AdamW moments: about 14 GB for SD 1.5
before activations. A LoRA (`lora_rank`) freezes the UNet in the mixed-precision dtype and trains small
low-rank matrices on its attention projections instead; STEA, which is small, still trains fully.
bitsandbytes' 8-bit AdamW (`use_8bit_adam`) stores the moments in 8 bits. The device check
(`python -m benchmarks.gpu`) measures what each saves; README's "Hardware" section has the figures.

A trained LoRA is written as diffusers' LoRA file (`unet_lora/pytorch_lora_weights.safetensors`, keys
`unet.…`, rank and alpha in its metadata): the pipeline fuses it into the base UNet when it loads the
weights folder, and `--lora` can load it as any other LoRA.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from portrait.errors import OptionError
from portrait.portrait_weights import LORA_FILE, UNET_LORA_FOLDER

from .config import TrainConfig

ADAPTER = "default"  # peft's name for the one adapter training adds


def adamw_class(config: TrainConfig, device: torch.device) -> type[torch.optim.Optimizer]:
    """torch's AdamW, or bitsandbytes' 8-bit one when the recipe asks and it can run (CUDA, installed)."""
    if not config.use_8bit_adam:
        return torch.optim.AdamW
    if device.type != "cuda":
        raise OptionError(f"use_8bit_adam needs a CUDA GPU (bitsandbytes' 8-bit AdamW); this run is on {device.type}")
    try:
        import bitsandbytes
    except ImportError:
        raise OptionError(
            "use_8bit_adam needs bitsandbytes: pip install bitsandbytes (or set use_8bit_adam: false)"
        ) from None
    return bitsandbytes.optim.AdamW8bit


def set_tf32(enabled: bool, device: torch.device) -> None:
    """TF32 (10-bit mantissa) for fp32 matrix products on CUDA, or full fp32 (torch's default); nothing on a CPU.
    cuDNN's convolutions are left as torch sets them (TF32 already)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.fp32_precision = "tf32" if enabled else "ieee"


def add_unet_lora(unet: torch.nn.Module, config: TrainConfig, dtype: torch.dtype) -> None:
    """Freeze `unet` (in `dtype`, the mixed-precision one) and give it a trainable rank-`lora_rank` LoRA in fp32.

    LoRA B starts at zero, so training starts from the base UNet exactly as full fine-tuning does."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    if dtype != torch.float32:
        unet.to(dtype)
    alpha = config.lora_alpha if config.lora_alpha is not None else config.lora_rank
    lora = LoraConfig(
        r=config.lora_rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(config.lora_modules)
    )
    unet.add_adapter(lora, adapter_name=ADAPTER)
    for parameter in unet.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()  # the trained matrices stay fp32 beside the frozen base


def has_lora(model: torch.nn.Module) -> bool:
    return ADAPTER in getattr(model, "peft_config", {})


def save_unet_lora(unet: torch.nn.Module, folder: Path) -> None:
    """The UNet's trained LoRA as diffusers' LoRA file in `folder/unet_lora/` (not the frozen base)."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
    layers = {key: value.detach().float().contiguous() for key, value in state.items()}
    metadata = unet.peft_config[ADAPTER].to_dict()
    StableDiffusionPipeline.save_lora_weights(
        Path(folder) / UNET_LORA_FOLDER,
        unet_lora_layers=layers,
        unet_lora_adapter_metadata=metadata,
        weight_name=LORA_FILE,
    )


def load_unet_lora(unet: torch.nn.Module, folder: Path) -> None:
    """Put the LoRA `save_unet_lora` wrote back into `unet`'s adapter (a resume): every key must fit."""
    from peft.utils import set_peft_model_state_dict

    saved = load_file(Path(folder) / UNET_LORA_FOLDER / LORA_FILE)
    state = {key.removeprefix("unet."): value for key, value in saved.items()}
    result = set_peft_model_state_dict(unet, state, adapter_name=ADAPTER)
    misfits = [*result.unexpected_keys, *(key for key in result.missing_keys if "lora_" in key)]
    if misfits:
        raise OptionError(f"{folder}'s LoRA does not fit the recipe's lora_rank and lora_modules: {misfits[0]}")
