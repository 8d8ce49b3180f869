"""Samplers and LoRAs: a LoRA made here loads, changes the picture and unloads to the same picture; LCM runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image

from portrait.cli import main
from portrait.errors import MissingWeightsError, OptionError
from portrait.loras import Lora, load_loras, parse_lora
from portrait.samplers import make_scheduler

from helpers import CHANGED, largest_difference, seeded


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, tiny_pipe):
    """A LoRA for the tiny UNet, with random (non-zero) weights, written as diffusers writes LoRAs."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_config(tiny_pipe.unet.config)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    folder = tmp_path_factory.mktemp("lora")
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet))
    return folder / "pytorch_lora_weights.safetensors"


@pytest.fixture
def own_pipe(tiny_pipe):
    """A tiny pipeline of its own: LoRAs change their UNet (peft freezes it), the shared one stays as it is."""
    from portrait.pipeline import PortraitBoothPipeline

    pipe = PortraitBoothPipeline.from_random_preset("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    pipe.face_analyzer = tiny_pipe.face_analyzer
    return pipe


def picture(pipe, face, **kwargs) -> np.ndarray:
    kwargs.setdefault("num_inference_steps", 3)
    return pipe("a photo of a woman", face=face, generator=seeded(0), output_type="np", **kwargs).images


def test_lora_loads_changes_the_picture_and_unloads_to_the_same(own_pipe, astronaut_face, lora_file):
    pipe = own_pipe
    before = {name: value.clone() for name, value in pipe.unet.state_dict().items()}
    plain = picture(pipe, astronaut_face)
    assert load_loras(pipe, [Lora(str(lora_file), 0.8)]) == ["pytorch_lora_weights"]
    assert largest_difference(picture(pipe, astronaut_face), plain) > CHANGED
    pipe.unload_lora_weights()
    after = pipe.unet.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[name], before[name]) for name in before)
    assert np.array_equal(picture(pipe, astronaut_face), plain)


def test_lcm_at_four_steps(tiny_pipe, astronaut_face):
    pipe = tiny_pipe.with_modules(scheduler=make_scheduler("lcm", tiny_pipe.scheduler.config))
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.scheduler is not tiny_pipe.scheduler
    out = picture(pipe, astronaut_face, num_inference_steps=4, guidance_scale=1.5)
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


def test_lora_flags_and_errors(tiny_pipe, own_pipe, tmp_path):
    assert parse_lora("latent-consistency/lcm-lora-sdv1-5") == Lora("latent-consistency/lcm-lora-sdv1-5", 1.0)
    assert parse_lora("styles/ink.safetensors:0.6") == Lora("styles/ink.safetensors", 0.6)
    assert parse_lora("C:/loras/ink.safetensors") == Lora("C:/loras/ink.safetensors", 1.0)
    with pytest.raises(OptionError, match="Unknown scheduler"):
        make_scheduler("ddim", tiny_pipe.scheduler.config)
    with pytest.raises(MissingWeightsError, match="Could not load the LoRA"):
        load_loras(own_pipe, [Lora(str(tmp_path / "none.safetensors"))])


def test_cli_fast_mode_with_a_lora(tmp_path, lora_file):
    args = ["generate", "--tiny", "--face", "example:astronaut", "--prompt", "a woman", "--seed", "2", "--out", str(tmp_path),
            "--scheduler", "lcm", "--lora", f"{lora_file}:0.7"]  # fmt: skip
    assert main(args) == 0
    text = Image.open(tmp_path / "portrait-2.png").text
    assert (text["scheduler"], text["steps"], text["guidance"]) == ("lcm", "6", "1.5") and text["loras"].endswith(
        ":0.7"
    )


def test_app_fast_toggle_and_style_choice(tiny_pipe, own_pipe, astronaut, lora_file):
    import gradio as gr

    from webui.adapters import Adapters
    from webui.handlers import PortraitService

    shared = own_pipe
    adapters = Adapters.load(shared, str(lora_file), [Lora(str(lora_file), 0.5)])
    assert adapters.lcm == "pytorch_lora_weights_1" and adapters.styles == {"pytorch_lora_weights": 0.5}
    service = PortraitService(shared, example=astronaut, adapters=adapters)
    common = dict(steps=2, seed=1, randomize_seed=False, remembered_face=service.use_example()[3])
    plain, _ = service.generate(None, "a woman", **common)
    fast, _ = service.generate(None, "a woman", fast=True, **common)
    styled, _ = service.generate(None, "a woman", style="pytorch_lora_weights", **common)
    again, _ = service.generate(None, "a woman", **common)  # adapters off again for a plain request
    assert fast[0][1].startswith("seed 1 · 6 LCM steps · guidance 1.5") and plain[0][1].startswith("seed 1 · 2 steps")
    pixels = [np.asarray(gallery[0][0], dtype=float) for gallery in (plain, styled, again)]
    assert np.abs(pixels[0] - pixels[1]).max() > 0 and np.array_equal(pixels[0], pixels[2])
    with pytest.raises(gr.Error, match="Unknown style 'oil'"):
        service.generate(None, "a woman", style="oil", **common)
    with pytest.raises(gr.Error, match="Fast mode needs the LCM-LoRA"):
        PortraitService(tiny_pipe, example=astronaut).generate(None, "a woman", fast=True, **common)
