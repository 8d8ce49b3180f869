"""The small findings of a hostile visitor's run (issue 19), each reproduced and each answered with a result or a sentence."""

from __future__ import annotations

import dataclasses
import io
import os
import unicodedata
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from portrait.cli import main as portrait_main
from portrait.errors import InvalidImageError, NoFaceError, OptionError, PromptError
from portrait.images import load_image, scaled_size
from portrait.prompts import build_identity_prompt, check_single_word
from portrait.provenance import READ_SIDE, _rescaled, add_watermark, has_watermark
from portrait.settings import Limit, check_fields
from train.celebvt_text import read_texts, subject_word
from train.config import TrainConfig


def png(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


# ------------------------------------------------------------------ images
@pytest.mark.parametrize("size", [(1, 60000), (60000, 1)])
def test_thin_images_shrink_to_a_pixel_and_get_a_sentence(analyzer, size):
    assert min(scaled_size(size, 1600)) == 1
    with pytest.raises(NoFaceError, match=f"No face found in the {size[0]}×{size[1]} image"):
        analyzer.analyze(load_image(png(Image.new("RGB", size, "white"))))


def test_pipes_are_refused_before_reading(tmp_path, astronaut, capsys):
    fifo = tmp_path / "face.png"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(InvalidImageError, match="face.png is not a regular file"):
        load_image(fifo)
    with pytest.raises(InvalidImageError, match="not a regular file"):
        load_image("/dev/zero")  # a device never ends
    assert portrait_main(["generate", "--tiny", "--face", str(fifo), "--prompt", "a man"]) == 2
    assert "face.png is not a regular file" in capsys.readouterr().err


def test_verify_checks_every_file_and_reports_each(tmp_path, astronaut, capsys):
    marked = add_watermark(astronaut)
    marked.save(tmp_path / "a.png")
    (tmp_path / "text.txt").write_text("not a picture")
    astronaut.save(tmp_path / "b.png")
    os.mkfifo(tmp_path / "pipe.png")
    paths = [str(tmp_path / name) for name in ("a.png", "text.txt", "pipe.png", "b.png")]
    assert portrait_main(["verify", *paths]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{paths[0]}: watermark found", f"{paths[3]}: no watermark"]
    assert [line.split(": error: ")[1].split(":")[0] for line in err.splitlines()] == [paths[1], paths[2]]
    assert portrait_main(["verify", paths[0], paths[3]]) == 1 and portrait_main(["verify", paths[0]]) == 0


def test_large_pictures_are_verified_at_bounded_size(astronaut):
    large = add_watermark(astronaut.resize((512, 512))).resize((6000, 6000), Image.BICUBIC)
    assert all(max(candidate.size) <= READ_SIDE for candidate in _rescaled(large))
    assert has_watermark(large)  # the generation size is among the candidates still


def test_image_sides_have_an_upper_bound(capsys):
    assert (
        portrait_main(["generate", "--tiny", "--face", "example:astronaut", "--prompt", "a man", "--width", "100000"])
        == 2
    )
    assert "The width must be a multiple of 8 from 8 to 2048 pixels, got 100000" in capsys.readouterr().err


def test_a_large_colour_profile_is_not_corruption():
    profile = np.random.default_rng(0).integers(0, 256, 15 * 2**20, dtype=np.uint8).tobytes()
    data = png(Image.new("RGB", (40, 30), (10, 20, 30)), icc_profile=profile)
    assert len(data) > 15 * 2**20
    image = load_image(data)
    assert image.size == (40, 30) and image.getpixel((0, 0)) == (10, 20, 30) and "icc_profile" not in image.info


# ------------------------------------------------------------------ words
def test_words_in_any_letters_and_either_unicode_form():
    decomposed = unicodedata.normalize("NFD", "café")
    assert len(decomposed) == 5 and check_single_word(decomposed) == "café"
    placed = build_identity_prompt(f"a photo of the {decomposed} owner", "café")
    assert placed.text[slice(*placed.identity_span)] == "café"
    placed = build_identity_prompt("a photo of İnci at the sea", "İnci")
    assert placed.text[slice(*placed.identity_span)] == "İnci" and placed.notice is None
    assert check_single_word("हिन्दी") == "हिन्दी"
    with pytest.raises(PromptError, match="single word"):
        check_single_word("two words")


# ------------------------------------------------------------------ training recipes
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("batch_size: -1", "batch_size must be ≥ 1; got -1"),
        ("mixed_precision: fp8", "mixed_precision must be one of no, fp16, bf16; got 'fp8'"),
        ("text_only_fraction: 5", "text_only_fraction must be ≥ 0 and ≤ 1; got 5.0"),
        ("max_steps: 1.5", "max_steps must be a whole number; got 1.5"),
        ("learning_rate: fast", "learning_rate must be a number; got 'fast'"),
        ("learning_rate: .nan", "learning_rate must be a finite number"),
        ("use_8bit_adam: 1", "use_8bit_adam must be true or false; got 1"),
        ("validation_prompts: a photo", "validation_prompts must be a list; got 'a photo'"),
        ("a: &x [1, 2]\nvalidation_prompts: [*x, *x]", "YAML aliases (*x) are not allowed"),
    ],
)
def test_recipes_are_checked_with_one_line_naming_the_key(tmp_path, line, message):
    (tmp_path / "recipe.yaml").write_text(line + "\n")
    with pytest.raises(OptionError) as error:
        TrainConfig.load(tmp_path / "recipe.yaml")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_yaml_1_1_floats_are_numbers(tmp_path):
    (tmp_path / "recipe.yaml").write_text('learning_rate: 1e-5\nmax_steps: 2e3\nvalidation_prompts: ["a {word}"]\n')
    config = TrainConfig.load(tmp_path / "recipe.yaml")
    assert config.learning_rate == 1e-5 and config.max_steps == 2000 and type(config.max_steps) is int
    assert config.validation_prompts == ("a {word}",)


def test_fields_added_later_are_checked_from_their_annotations():
    @dataclass
    class Recipe:
        lora_rank: int = 4
        lora_alpha: float = 1.0
        optimizer: str | None = None

        def __post_init__(self):
            check_fields(self, {"lora_alpha": Limit(0.0, low_open=True)})

    assert Recipe(lora_rank="8", lora_alpha="2e-1").lora_rank == 8
    for values, message in (({"lora_rank": -2}, "lora_rank must be ≥ 0"), ({"lora_alpha": 0}, "lora_alpha must be > 0"),
                            ({"optimizer": 8}, "optimizer must be text")):  # fmt: skip
        with pytest.raises(OptionError, match=message):
            Recipe(**values)
    assert dataclasses.asdict(Recipe()) == {"lora_rank": 4, "lora_alpha": 1.0, "optimizer": None}


# ------------------------------------------------------------------ caption files
def test_caption_files_in_latin_1_and_utf_16(tmp_path):
    for category, text, encoding in (("appearance", "The woman wears a café-au-lait dress.", "latin-1"),
                                     ("action", "She talks.", "utf-16"), ("emotion", "happy", "utf-8")):  # fmt: skip
        (tmp_path / "texts" / category).mkdir(parents=True)
        (tmp_path / "texts" / category / "clip.txt").write_bytes(text.encode(encoding))
    texts = read_texts(tmp_path, "clip")
    assert texts == {"action": "She talks.", "appearance": "The woman wears a café-au-lait dress.", "emotion": "happy"}
    assert texts.fallbacks == {"action": "utf-16", "appearance": "cp1252"}
    assert subject_word({"action": texts["action"]}).word == "woman"
