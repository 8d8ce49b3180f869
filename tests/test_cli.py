import os
import subprocess
import sys
from pathlib import Path

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
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == ["portrait-7-0.png"] and f"wrote {written[0]}" in done.stdout
    assert "tiny preset" in done.stderr
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
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["portrait-3-0-1.png", "portrait-3-0.png", "portrait-3-1.png"]


def test_clear_errors_exit_with_2(tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 90), "white").save(blank)
    assert main(["generate", "--tiny", "--face", str(blank), "--prompt", "a man", "--out", str(tmp_path)]) == 2
    assert "No face found in the 120×90 image" in capsys.readouterr().err
    two = ["generate", "--tiny", "--face", str(blank), "--face", str(blank), "--prompt", "a man and a man"]
    assert main(two) == 2 and "several people" in capsys.readouterr().err
    assert main(["generate", "--tiny", "--face", str(tmp_path / "missing.jpg"), "--prompt", "a man"]) == 2
    assert "No such image file" in capsys.readouterr().err
