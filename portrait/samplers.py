"""Samplers: the paper's Euler/50 by default, faster ones on request (LoRAs: portrait/loras.py).

- `euler`: Euler discrete, the paper's sampler (50 steps, guidance 5).
- `dpm++`: DPM-Solver++ (2M), about as good in 20-25 steps.
- `lcm`: the latent-consistency sampler, for an LCM-LoRA (SD 1.5's is `latent-consistency/lcm-lora-sdv1-5`):
  4-8 steps at guidance 1-2.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, LCMScheduler

from .defaults import PAPER_GUIDANCE, PAPER_STEPS
from .errors import OptionError


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
