"""The safety checker: on by default, a flagged picture is blank and the answer says so, one person or two."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file

import portrait.engine
from portrait.cli import main
from portrait.engine import ModelSource, load_pipeline
from portrait.errors import MissingWeightsError
from portrait.multi import Person, PortraitBoothPeoplePipeline
from portrait.safety import FLAGGED_NOTE, load_safety_checker, tiny_safety_checker
from webui.handlers import PortraitService

from helpers import seeded


def flagging_checker(seed: int = 0) -> dict:
    """The tiny checker with every concept's threshold below any similarity: it flags every picture."""
    modules = tiny_safety_checker(seed)
    modules["safety_checker"].concept_embeds_weights.data.fill_(-2.0)
    return modules


@pytest.fixture(scope="module")
def flagging_pipe(tiny_pipe):
    return tiny_pipe.with_modules(**flagging_checker())


def test_the_loader_puts_the_checker_in_unless_research_asks_otherwise():
    assert load_pipeline(ModelSource(base="tiny")).safety_checker is not None
    assert load_pipeline(ModelSource(base="tiny", safety_checker=False)).safety_checker is None


def test_the_checker_runs_in_the_pipelines_precision():
    """diffusers hands the checker pixels in the pipeline's dtype (fp16 on CUDA): it must be in that dtype too."""
    pipe = load_pipeline(ModelSource(base="tiny", device="cpu", dtype="bf16"))
    assert pipe.safety_checker.dtype == pipe.unet.dtype == torch.bfloat16


def test_an_untouched_checker_lets_pictures_through(tiny_pipe, astronaut_face):
    pipe = tiny_pipe.with_modules(**tiny_safety_checker())
    out = pipe("a woman", face=astronaut_face, num_inference_steps=1, generator=seeded(0), output_type="np")
    assert out.nsfw_content_detected == [False] and out.images.max() > 0


def test_a_flagged_picture_is_blank_and_said_so(flagging_pipe, astronaut_face):
    out = flagging_pipe(
        "a woman", face=astronaut_face, num_inference_steps=1, num_images_per_prompt=2, output_type="np"
    )
    assert out.nsfw_content_detected == [True, True] and out.images.max() == 0
    several = flagging_pipe.with_modules(PortraitBoothPeoplePipeline)
    pair = several(
        "a man and a woman", [Person(astronaut_face), Person(astronaut_face)], num_inference_steps=1, output_type="np"
    )
    assert pair.nsfw_content_detected == [True] and pair.images.max() == 0


def test_missing_checker_weights_name_the_research_switch(tmp_path, offline):
    with pytest.raises(MissingWeightsError, match="--no-safety-checker"):
        load_safety_checker(tmp_path)


def test_the_cli_says_which_picture_was_held_back(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(portrait.engine, "tiny_safety_checker", flagging_checker)
    assert main(["generate", "--tiny", "--face", "example:astronaut", "--prompt", "a man", "--steps", "1", "--seed", "4",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    assert f"the picture of seed 4 was {FLAGGED_NOTE}" in capsys.readouterr().out


@pytest.mark.slow
def test_the_app_answers_a_flagged_generation_with_the_blank_and_a_note(flagging_pipe, astronaut, tmp_path):
    from app import build_app

    from app_server import free_port

    service = PortraitService(flagging_pipe, example=astronaut)
    demo = build_app(service, None)
    port = free_port()
    demo.queue().launch(server_port=port, prevent_thread_lock=True, show_error=True)
    try:
        face = tmp_path / "me.png"
        astronaut.save(face)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        gallery, info = client.predict(handle_file(str(face)), "a woman", steps=1, api_name="/generate")
        assert f"1 of 1 pictures were {FLAGGED_NOTE}" in info
        from PIL import Image

        assert np.asarray(Image.open(gallery[0]["image"])).max() == 0
        gallery, info = client.predict(handle_file(str(face)), handle_file(str(face)), "a photo of a man and a woman",
                                       steps=1, api_name="/generate_pair")  # fmt: skip
        assert FLAGGED_NOTE in info
    finally:
        demo.close()
