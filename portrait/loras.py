"""LoRAs on top of the pipeline: style LoRAs (`--lora PATH_OR_ID[:SCALE]`) and the LCM-LoRA of the `lcm` sampler.

They load through diffusers' own `load_lora_weights` (peft), each as a named adapter with its scale.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingWeightsError, OptionError
from .weights import LCM_LORA

LCM_LORA_ID = LCM_LORA.repo_id  # what the `lcm` sampler (portrait/samplers.py) needs, 4-8 steps at guidance 1-2


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
