"""A captioning model for data preparation: BLIP through transformers (no remote code), `--captioner blip`.

The paper tags frames with Recognize Anything, which no longer imports under current transformers;
BLIP loads natively. Its caption describes the frame ("a photo of a man with a beard in a kitchen");
whatever it calls the subject (woman, person, guy, ...) becomes the clip's own subject word, and a
caption that names nobody gets "a photo of a <word>, " in front: every caption holds the word that
STEA gives the face to.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from PIL import Image

from portrait.loading import resolve_model
from portrait.prompts import build_identity_prompt
from portrait.runtime import pick_device
from portrait.weights import BLIP_CAPTIONER

PROMPT = "a photo of"
PERSON = re.compile(r"\b(man|woman|person|boy|girl|guy|lady|gentleman|male|female|child|kid)\b", flags=re.IGNORECASE)


def with_subject(caption: str, word: str) -> str:
    """`caption` whose first person noun is `word`; prefixed with it (as every prompt is) when it names nobody."""
    return build_identity_prompt(PERSON.sub(word, caption, count=1), word).text


class BlipCaptioner:
    name = "blip"

    def __init__(self, model=None, processor=None, source: str | Path | None = None, max_new_tokens: int = 30):
        """`model` and `processor` when built already (tests); else loaded from `source` (hub id or folder)."""
        if model is None or processor is None:
            from transformers import BlipForConditionalGeneration, BlipProcessor

            folder = resolve_model(BLIP_CAPTIONER, "BLIP captioner", source)
            model, processor = (
                BlipForConditionalGeneration.from_pretrained(folder),
                BlipProcessor.from_pretrained(folder),
            )
        self.device = pick_device()
        self.model, self.processor = model.to(self.device).eval(), processor
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def caption(self, image: Image.Image, texts: dict[str, str], word: str) -> str:
        inputs = self.processor(images=image.convert("RGB"), text=PROMPT, return_tensors="pt").to(self.device)
        tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        return with_subject(self.processor.decode(tokens[0], skip_special_tokens=True), word)
