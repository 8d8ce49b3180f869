"""Stable Diffusion 1.5's own safety checker: on by default wherever people use the engine.

People upload photos of real people; a picture the checker flags is replaced by a blank one and the
result says so (diffusers' StableDiffusionSafetyChecker does the replacing). It comes from the base
model's `safety_checker/` and `feature_extractor/` folders (SD 1.5 ships them), else from its own
repository; the random-weight presets get a tiny one built from a config. Training validation and
the evaluation harness run without it (research use) and record that they do.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor

from .errors import MissingWeightsError
from .loading import resolve_model
from .weights import SAFETY_CHECKER_ALONE, SD15_SAFETY_CHECKER

FLAGGED_NOTE = "held back by the safety checker (shown blank)"


def load_safety_checker(base: str | Path) -> dict:
    """{"safety_checker", "feature_extractor"} of the base model, or of the checker's own repository."""
    for model, source, prefix in (
        (SD15_SAFETY_CHECKER, base, ("safety_checker/", "feature_extractor/")),
        (SAFETY_CHECKER_ALONE, None, ("", "")),
    ):
        try:
            folder = resolve_model(model, "Safety checker", source)
        except MissingWeightsError:
            continue
        return {
            "safety_checker": StableDiffusionSafetyChecker.from_pretrained(folder / prefix[0]).eval(),
            "feature_extractor": CLIPImageProcessor.from_pretrained(folder / prefix[1]),
        }
    raise MissingWeightsError(
        f"The safety checker is not here: SD 1.5's safety_checker/ and feature_extractor/ (in {base} or its hub "
        f"cache) or {SAFETY_CHECKER_ALONE.repo_id} in the hub cache (`portrait weights fetch safety-checker`); "
        "--no-safety-checker turns it off for research use only"
    )


def tiny_safety_checker(seed: int = 0) -> dict:
    """The checker's architecture at toy size with random weights, for the random-weight presets."""
    from .identity.clip_features import TINY_VISION

    vision = {key: value for key, value in TINY_VISION.items() if key != "projection_dim"}
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        checker = StableDiffusionSafetyChecker(
            CLIPConfig(text_config=text, vision_config=vision, projection_dim=TINY_VISION["projection_dim"])
        )
    processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_VISION["image_size"]}, crop_size={"height": 32, "width": 32}
    )
    return {"safety_checker": checker.eval(), "feature_extractor": processor}
