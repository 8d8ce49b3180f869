import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from portrait.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_module_entry_point_writes_a_png_with_metadata(tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "portrait", "generate", "--tiny", "--face", "example:astronaut",
        "--prompt", "a photo of a woman in the snow", "--expression", "happy", "--steps", "3", "--seed", "7",
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert done.returncode == 0, done.stderr
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == ["portrait-7.png"] and f"wrote {written[0]}" in done.stdout
    assert "untrained random models" in done.stderr
    image = Image.open(written[0])
    assert image.size == (64, 64)
    assert image.text["prompt"] == "a photo of a happy woman in the snow" and image.text["seed"] == "7"
    assert list(out.glob(".*")) == []  # no partial files left behind


def test_names_are_not_overwritten(tmp_path, astronaut):
    face = tmp_path / "me.jpg"
    astronaut.save(face)
    args = ["generate", "--tiny", "--face", str(face), "--prompt", "a woman", "--steps", "1", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "o"), "--num-images", "2"]) == 0
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "portrait-3-1.png",
        "portrait-3.png",
        "portrait-4.png",
    ]


def test_clear_errors_exit_with_2(tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 90), "white").save(blank)
    assert main(["generate", "--tiny", "--face", str(blank), "--prompt", "a man", "--out", str(tmp_path)]) == 2
    assert "No face found in the 120×90 image" in capsys.readouterr().err
    three = [
        "generate",
        "--tiny",
        "--face",
        "example:astronaut",
        "--face",
        "example:astronaut",
        "--face",
        "example:astronaut",
    ]
    assert main([*three, "--prompt", "a man and a woman"]) == 2
    assert "3 faces were given but the prompt names 2 people (man, woman)" in capsys.readouterr().err
    assert main([*three[:6], "--prompt", "a man and a man", "--identity-word", "man"]) == 2
    assert "--identity-word was given 1 times for 2 face(s)" in capsys.readouterr().err
    assert main(["generate", "--tiny", "--face", str(tmp_path / "missing.jpg"), "--prompt", "a man"]) == 2
    assert "No such image file" in capsys.readouterr().err


def test_two_people_say_which_face_went_where(tmp_path, capsys):
    faces = ["--face", "example:astronaut", "--face", "example:astronaut"]
    args = ["generate", "--tiny", *faces, "--prompt", "a photo of a man and a man in a bar", "--steps", "2"]
    assert main([*args, "--expression", "happy", "--seed", "1", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "face 1 (example:astronaut) → 'man' at characters (19, 22), x 0.00–0.50, y 0.00–1.00"
    assert lines[1] == "face 2 (example:astronaut) → 'man' at characters (35, 38), x 0.50–1.00, y 0.00–1.00"
    assert Image.open(tmp_path / "portrait-1.png").text["prompt"] == "a photo of a happy man and a happy man in a bar"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--num-images", "0"], "at least 1"),
        (["--steps", "0"], "at least 1"),
        (["--height", "500"], "multiple of 8"),
        (["--face", "example:astronaut", "--height", "500"], "multiple of 8"),
        (["--guidance", "nan"], "guidance scale must be a number"),
        (["--guidance", "-1"], "guidance scale must be a number"),
        (["--identity-start", "nan"], "identity_start must be between 0 and 1"),
        (["--seed", str(2**70)], "--seed takes a whole number"),
        (["--seed", "-1"], "--seed takes a whole number"),
    ],
)
def test_bad_numbers_are_refused_with_a_sentence(options, message, capsys):
    args = ["generate", "--tiny", "--face", "example:astronaut", "--prompt", "a man and a woman", *options]
    assert main(args) == 2 and message in capsys.readouterr().err


def test_overlapping_regions_share_their_pixels(tmp_path, capsys):
    faces = ["--face", "example:astronaut", "--face", "example:astronaut"]
    args = [
        "generate",
        "--tiny",
        *faces,
        "--prompt",
        "a photo of a man and a woman",
        "--steps",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main([*args, "--region", "0,0,0.7,1", "--region", "0.3,0,1,1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "x 0.00–0.70" in lines[0] and "x 0.30–1.00" in lines[1]
    assert main([*args, "--region", "0.5,0,0.2,1", "--region", "0,0,1,1"]) == 2
    assert "x0<x1" in capsys.readouterr().err


def _documented_example(prompt, height, width, **kwargs):
    """Makes pictures.

    Args:
        prompt (`str` or `List[str]`):
            The prompt; the identity word
            receives the face.
        height (`int`, *optional*), width (`int`, *optional*):
            Size in pixels.
        **kwargs:
            Passed on.

    Returns:
        pictures (`list`): not a parameter.
    """


def test_docstring_arguments_are_read_per_parameter():
    from portrait.docstrings import documented_args

    assert documented_args(_documented_example) == {
        "prompt": "The prompt; the identity word receives the face.",
        "height": "Size in pixels.",
        "width": "Size in pixels.",
        "kwargs": "Passed on.",
    }


def test_cli_help_says_what_the_pipeline_docstring_says(capsys):
    from portrait.cli import build_parser
    from portrait.docstrings import documented_args
    from portrait.pipeline import PortraitBoothPipeline

    described = documented_args(PortraitBoothPipeline.__call__)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for parameter in ("identity_start", "negative_prompt", "guidance_scale", "num_inference_steps", "height"):
        assert described[parameter] and described[parameter] in shown, parameter
