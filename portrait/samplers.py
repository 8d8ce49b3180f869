"""Samplers and LoRAs: the paper's Euler/50 by default, faster ones on request, style LoRAs on top.

- `euler`: Euler discrete, the paper's sampler (50 steps, guidance 5).
- `dpm++`: DPM-Solver++ (2M), about as good in 20-25 steps.
- `lcm`: the latent-consistency sampler, for an LCM-LoRA (SD 1.5's is `latent-consistency/lcm-lora-sdv1-5`):
  4-8 steps at guidance 1-2.
LoRAs load through diffusers' own `load_lora_weights` (peft), each as a named adapter with its scale.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, LCMScheduler

from .defaults import PAPER_GUIDANCE, PAPER_STEPS
from .errors import MissingWeightsError, OptionError
from .weights import LCM_LORA

LCM_LORA_ID = LCM_LORA.repo_id


@dataclass(frozen=True)
class Sampler:
    scheduler: type
    steps: int
    guidance: float
    options: tuple[tuple[str, object], ...] = ()

    @property
    def arguments(self) -> dict:
        """Its default steps and guidance, as the pipelines' call takes them."""
        return {"num_inference_steps": self.steps, "guidance_scale": self.guidance}


SAMPLERS = {
    "euler": Sampler(EulerDiscreteScheduler, PAPER_STEPS, PAPER_GUIDANCE),
    "dpm++": Sampler(DPMSolverMultistepScheduler, 25, 5.0, (("algorithm_type", "dpmsolver++"),)),
    "lcm": Sampler(LCMScheduler, 6, 1.5),
}


def make_scheduler(name: str, config):
    """A new scheduler of the named kind, from a pipeline's scheduler config (same noise schedule)."""
    if name not in SAMPLERS:
        raise OptionError(f"Unknown scheduler {name!r}; choose one of {', '.join(SAMPLERS)}")
    sampler = SAMPLERS[name]
    return sampler.scheduler.from_config(config, **dict(sampler.options))


@dataclass(frozen=True)
class Lora:
    source: str  # a folder, a .safetensors file, or a hub id
    scale: float = 1.0

    @property
    def adapter(self) -> str:
        """A name for the adapter, from the source (peft names must be unique and plain)."""
        name = Path(self.source.rstrip("/")).stem if os.path.exists(self.source) else self.source.split("/")[-1]
        return "".join(c if c.isalnum() else "_" for c in name) or "lora"


def parse_lora(text: str) -> Lora:
    """`PATH_OR_ID` or `PATH_OR_ID:SCALE`."""
    source, _, scale = text.rpartition(":")
    if source and _is_number(scale):
        return Lora(source, float(scale))
    return Lora(text)


def load_loras(pipe, loras: list[Lora]) -> list[str]:
    """Load each LoRA as an adapter of `pipe` and turn them all on at their scales; the adapter names."""
    names: list[str] = []
    loaded = [name for adapters in pipe.get_list_adapters().values() for name in adapters] if loras else []
    for lora in loras:
        name = _unique(lora.adapter, [*loaded, *names])
        path = Path(lora.source)
        try:
            if path.is_file():
                pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
            else:
                pipe.load_lora_weights(lora.source, adapter_name=name)
        except (OSError, ValueError) as error:
            raise MissingWeightsError(f"Could not load the LoRA {lora.source}: {error}") from None
        except RuntimeError as error:  # tensors of another model's shape
            raise OptionError(f"The LoRA {lora.source} does not fit this model: {error}") from None
        names.append(name)
    if names:
        pipe.set_adapters(names, [lora.scale for lora in loras])
    return names


def _unique(name: str, taken: list[str]) -> str:
    candidate, number = name, 1
    while candidate in taken:
        candidate, number = f"{name}_{number}", number + 1
    return candidate


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
