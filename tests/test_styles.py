"""Style templates and named sizes: every template keeps the face's word findable and is recorded."""

from __future__ import annotations

import pytest
from PIL import Image

from portrait.cli import main
from portrait.errors import OptionError
from portrait.prompts import build_identity_prompt, token_index
from portrait.styles import ASPECTS, NO_STYLE, canvas_size, load_styles, style_names, styled
from webui.handlers import PortraitService


def test_there_are_eight_to_twelve_styles_after_no_style():
    names = style_names()
    assert names[0] == NO_STYLE and 8 <= len(names) - 1 <= 12


@pytest.mark.parametrize("name", list(load_styles()))
def test_every_template_fills_the_prompt_and_keeps_the_identity_word(tiny_pipe, name):
    prompt, negative = styled(name, "a photo of a woman in the snow", "blurry")
    assert "a photo of a woman in the snow" in prompt and prompt != "a photo of a woman in the snow"
    assert negative.startswith("blurry, ") and negative.endswith(load_styles()[name].negative_prompt)
    placed = build_identity_prompt(prompt)
    assert placed.text[slice(*placed.identity_span)] == "woman"
    token_index(tiny_pipe.tokenizer, placed.text, placed.identity_span)  # within the tiny encoder's tokens


def test_no_style_leaves_prompts_alone_and_unknown_styles_are_named():
    assert styled(NO_STYLE, "a man", None) == ("a man", None)
    with pytest.raises(OptionError, match="Unknown style 'Baroque'; choose one of: no style, Photographic"):
        styled("Baroque", "a man")


def test_sizes_are_the_apps_names():
    assert canvas_size("Square 1:1", 512) == (512, 512) and canvas_size("Landscape 4:3", 64) == (80, 48)
    with pytest.raises(OptionError, match="Unknown size"):
        canvas_size("Huge", 512)


def test_cli_style_and_aspect_are_recorded(tmp_path):
    args = ["generate", "--tiny", "--face", "example:astronaut", "--prompt", "a woman in the snow", "--steps", "1"]
    assert (
        main([*args, "--style", "Film noir", "--aspect", "Landscape 4:3", "--seed", "2", "--out", str(tmp_path)]) == 0
    )
    image = Image.open(tmp_path / "portrait-2.png")
    assert image.size == (80, 48) and image.text["size"] == "80×48" and image.text["style"] == "Film noir"
    assert image.text["prompt"].startswith("film noir photo of a woman in the snow")
    assert image.text["negative_prompt"] == load_styles()["Film noir"].negative_prompt
    assert main([*args, "--aspect", "Wide 3:2", "--height", "64", "--out", str(tmp_path)]) == 2


def test_app_caption_records_style_and_size(tiny_pipe, astronaut):
    service = PortraitService(tiny_pipe, example=astronaut)
    remembered = service.use_example()[3]  # what the session keeps: the face encoding, by name
    gallery, _ = service.generate(None, "a woman", steps=1, remembered_face=remembered, aspect="Portrait 3:4",
                                  style_template="Watercolour")  # fmt: skip
    ((image, caption),) = gallery
    assert "style Watercolour" in caption and f"{image.width}×{image.height}" in caption
    assert "watercolour painting of a woman" in caption and ASPECTS["Portrait 3:4"] == (3, 4)
