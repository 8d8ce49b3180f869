"""The LoRAs a server loads at start: the LCM-LoRA behind the "Fast" toggle, and style LoRAs by name.

Adapters are state of the one shared UNet, so a generation sets the ones its request asks for and
keeps them while it runs: requests that use LoRAs take turns (`lock`), whatever --concurrency says.
Requests cannot load files: only what the server's flags named is offered.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Iterator

from portrait.errors import MissingWeightsError, OptionError
from portrait.loras import Lora, load_loras
from portrait.pipeline import PortraitBoothPipeline

logger = logging.getLogger(__name__)

NO_STYLE = "none"


@dataclass
class Adapters:
    lcm: str | None = None  # the LCM-LoRA's adapter name, when it loaded
    styles: dict[str, float] = field(default_factory=dict)  # style adapter name → its scale
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, pipe: PortraitBoothPipeline, lcm: str | None, styles: list[Lora]) -> "Adapters":
        """Style LoRAs must load (the server asked for them); the LCM-LoRA is optional and said so when absent."""
        names = load_loras(pipe, styles)
        adapters = cls(styles=dict(zip(names, (lora.scale for lora in styles))))
        if lcm:
            try:
                (adapters.lcm,) = load_loras(pipe, [Lora(lcm)])
            except MissingWeightsError as error:
                logger.warning("No Fast (LCM) toggle: %s", error)
        if names or adapters.lcm:
            pipe.disable_lora()  # until a request asks for them
        return adapters

    @property
    def any(self) -> bool:
        return bool(self.lcm or self.styles)

    def check(self, fast: bool, style: str) -> None:
        """A request may ask only for what this server loaded."""
        if fast and not self.lcm:
            raise OptionError("Fast mode needs the LCM-LoRA, which this server has not loaded.")
        if style != NO_STYLE and style not in self.styles:
            raise OptionError(f"Unknown style {style!r}; this server offers: {', '.join([NO_STYLE, *self.styles])}.")

    @contextmanager
    def used_by(self, pipe: PortraitBoothPipeline, fast: bool, style: str) -> Iterator[None]:
        """Set the request's adapters on the shared UNet and keep them while it generates."""
        wanted = ([self.lcm] if fast else []) + ([style] if style != NO_STYLE else [])
        scales = ([1.0] if fast else []) + ([self.styles[style]] if style != NO_STYLE else [])
        with self.lock if self.any else nullcontext():
            if wanted:
                pipe.enable_lora()
                pipe.set_adapters(wanted, scales)
            elif self.any:
                pipe.disable_lora()
            yield
