"""Every picture says it was generated: an invisible watermark that survives JPEG and resizing, and metadata."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from portrait.cli import main
from portrait.provenance import (
    DIGITAL_SOURCE_TYPE,
    MATCHING_BITS,
    add_watermark,
    has_watermark,
    matching_bits,
    png_info,
)


def jpeg(image: Image.Image, quality: int = 90) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_the_watermark_survives_jpeg_and_a_smaller_copy(astronaut):
    marked = add_watermark(astronaut)
    assert marked.size == astronaut.size and np.abs(np.asarray(marked, float) - np.asarray(astronaut, float)).mean() < 3
    assert matching_bits(marked) == 48 and has_watermark(jpeg(marked))
    smaller = marked.resize((384, 384), Image.BICUBIC)  # 75 % of 512
    assert has_watermark(smaller) and has_watermark(jpeg(smaller))
    assert not has_watermark(astronaut) and matching_bits(astronaut) < MATCHING_BITS


def test_pictures_too_small_to_carry_it_stay_as_they_are():
    small = Image.new("RGB", (64, 64), (120, 30, 200))
    assert add_watermark(small) is small and not has_watermark(small)


def test_png_metadata_says_ai_generated():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=png_info({"prompt": "a woman", "seed": "3"}))
    text = Image.open(buffer).text
    assert (
        text["prompt"] == "a woman"
        and text["DigitalSourceType"] == DIGITAL_SOURCE_TYPE
        and text["AI-generated"] == "yes"
    )
    assert "trainedAlgorithmicMedia" in text["XML:com.adobe.xmp"]


@pytest.mark.slow
def test_generate_then_verify_at_512_after_jpeg(tmp_path, capsys):
    args = ["generate", "--tiny", "--height", "512", "--width", "512", "--face", "example:astronaut", "--prompt", "a woman",
            "--steps", "1", "--seed", "5", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    picture = tmp_path / "portrait-5.png"
    assert Image.open(picture).text["DigitalSourceType"] == DIGITAL_SOURCE_TYPE
    jpeg(Image.open(picture)).save(tmp_path / "again.png")  # through a quality-90 JPEG
    Image.new("RGB", (512, 512), "gray").save(tmp_path / "plain.png")
    capsys.readouterr()
    assert main(["verify", str(picture), str(tmp_path / "again.png")]) == 0
    assert capsys.readouterr().out.count("watermark found") == 2
    assert main(["verify", str(picture), str(tmp_path / "plain.png")]) == 1
    assert f"{tmp_path / 'plain.png'}: no watermark" in capsys.readouterr().out
    assert main(["generate", *args[1:-2], "--out", str(tmp_path / "raw"), "--no-watermark"]) == 0
    assert main(["verify", str(tmp_path / "raw" / "portrait-5.png")]) == 1
