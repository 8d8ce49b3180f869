"""Device and precision choices: fp16 (or bf16) on CUDA, fp32 on the CPU."""

from __future__ import annotations

import torch

from .errors import OptionError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(name: str | None = None) -> torch.device:
    """The requested device, else CUDA when present, else the CPU."""
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise OptionError("CUDA was requested but no CUDA GPU is visible to PyTorch; use --device cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device, name: str | None = None) -> torch.dtype:
    """The requested precision, else fp16 on CUDA and fp32 on the CPU (half precision is slow there)."""
    if name:
        if name not in DTYPES:
            raise OptionError(f"Unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
        return DTYPES[name]
    return torch.float16 if device.type == "cuda" else torch.float32


def seeded_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image, so any image can be made again alone from its own seed."""
    return [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]
