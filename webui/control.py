"""Pose and layout from a picture in the app: the request's control picture, its map, and the ControlNet for it.

ControlNets are loaded on first use and kept (one per kind); the control picture is read by the engine's
loader and deleted from disk in the same request, like a selfie.
"""

from __future__ import annotations

import threading

import gradio as gr
from diffusers import ControlNetModel

from portrait.control import CONTROLS, control_map, controlled, load_controlnet
from portrait.pipeline import PortraitBoothPipeline

from .uploads import UploadReader


class Controls:
    def __init__(self, pipe: PortraitBoothPipeline, uploads: UploadReader, random_weights: bool = False):
        self.pipe = pipe
        self.uploads = uploads
        self.random_weights = random_weights  # random-weight presets get a random ControlNet shaped like their UNet
        self.loaded: dict[str, ControlNetModel] = {}
        self._lock = threading.Lock()

    def controlnet(self, kind: str) -> ControlNetModel:
        with self._lock:
            if kind not in self.loaded:
                self.loaded[kind] = load_controlnet(kind, self.pipe, self.random_weights)
            return self.loaded[kind]

    def steer(
        self, pipe: PortraitBoothPipeline, picture: str | bytes | None, kind: str, scale: float, size: tuple[int, int]
    ) -> tuple[PortraitBoothPipeline, str | None]:
        """`pipe` steered by the picture's pose or layout when a picture came, and the caption's words for it."""
        if picture is None:
            return pipe, None
        if kind not in CONTROLS:
            raise gr.Error(f"Control must be one of: {', '.join(CONTROLS)}.")
        if not 0 <= scale <= 2:
            raise gr.Error("Control strength must be between 0 and 2.")
        (image,) = self.uploads.read([picture])
        if image is None:
            raise gr.Error("Upload the control picture again.")
        width, height = size
        steered = controlled(pipe, self.controlnet(kind), control_map(kind, image), width, height, scale)
        return steered, f"{kind} control · scale {scale:g}"
