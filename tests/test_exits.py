"""Every command's expected failures: one line on stderr, a non-zero exit, no traceback unless --debug."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from portrait.errors import MissingWeightsError
from portrait.exits import DEBUG_ENV, describe, run

REPO = Path(__file__).resolve().parent.parent


def test_each_kind_of_failure_in_words():
    assert describe(MissingWeightsError("put x.pth in /w")) == ("put x.pth in /w", True)
    assert describe(OSError(errno.ENOSPC, "No space left on device", "/out/a.png"))[0].startswith(
        "no space left on the disk: /out/a.png"
    )
    assert describe(PermissionError(errno.EACCES, "Permission denied", "/root/x"))[0].startswith(
        "not allowed to write or read: /root/x"
    )
    assert (
        describe(NotADirectoryError(errno.ENOTDIR, "Not a directory", "out/f"))[0]
        == "a file stands where a folder is needed: out/f"
    )
    assert describe(torch.OutOfMemoryError("CUDA out of memory.\nTried to allocate 2 GiB"))[0].startswith(
        "out of GPU memory"
    )
    assert describe(ZeroDivisionError("division by zero")) == ("ZeroDivisionError: division by zero", False)


def test_run_prints_one_line_and_debug_lets_the_traceback_through(capsys, monkeypatch):
    def failing(argv):
        raise MissingWeightsError("Missing weights:\nput a.pth in /w")

    assert run(failing, [], prog="tool") == 2
    assert capsys.readouterr().err == "tool: error: Missing weights: put a.pth in /w\n"
    assert run(lambda argv: (_ for _ in ()).throw(KeyError("x")), [], prog="tool") == 1
    assert capsys.readouterr().err == "tool: error: KeyError: 'x' (--debug shows where)\n"
    with pytest.raises(MissingWeightsError):
        run(failing, ["--debug"], prog="tool")
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(MissingWeightsError):
        run(failing, [], prog="tool")


@pytest.fixture(scope="module")
def places(tmp_path_factory, astronaut):
    root = tmp_path_factory.mktemp("commands")
    (root / "a_file").write_text("not a folder")
    (root / "empty").mkdir()
    from celebvt_fixture import make_mini_celebvt

    make_mini_celebvt(root / "celebvt", astronaut)
    return root


GENERATE_TINY = ["-m", "portrait", "generate", "--tiny", "--face", "example:astronaut", "--prompt", "a man"]
CASES = {
    "missing photo": (
        ["-m", "portrait", "generate", "--tiny", "--face", "{root}/nothere.jpg", "--prompt", "a man"],
        "No such image file",
    ),
    "output is a file": (
        [*GENERATE_TINY, "--steps", "1", "--out", "{root}/a_file"],
        "a file stands where a folder is needed",
    ),
    "missing base model": (
        ["-m", "portrait", "generate", "--face", "example:astronaut", "--prompt", "a man"],
        "not in the Hugging Face cache",
    ),
    "no CUDA": (
        [*GENERATE_TINY, "--device", "cuda"],
        "no CUDA GPU",
    ),
    "bad number": (
        ["-m", "portrait", "generate", "--tiny", "--face", "example:astronaut", "--prompt", "a", "--steps", "x"],
        "invalid int value",
    ),
    "app port": (["app.py", "--tiny", "--port", "99999"], "a port is a number from 0 to 65535"),
    "training without data": (
        [
            "-m",
            "train.train",
            "--config",
            "train/configs/tiny.yaml",
            "--data",
            "{root}/empty",
            "--output-dir",
            "{root}/run",
        ],
        "No manifest.jsonl",
    ),
    "unknown recipe setting": (
        ["-m", "train.train", "--config", "{root}/a_file", "--data", "{root}/empty", "--output-dir", "{root}/run"],
        "not a recipe",
    ),
    "scoring a missing run": (
        ["-m", "evaluation", "score", "--run", "{root}/norun", "--tiny"],
        "no such file or folder",
    ),
    "parser weights missing, two workers": (
        [
            "-m",
            "train.prepare_celebvt",
            "--celebvt",
            "{root}/celebvt",
            "--out",
            "{root}/prepared",
            "--workers",
            "2",
            "--weights-dir",
            "{root}/empty",
        ],
        "parsing_bisenet.pth",
    ),
    "not a CelebV-Text folder": (
        ["-m", "train.prepare_celebvt", "--celebvt", "{root}/empty", "--out", "{root}/prepared"],
        "no videos/ folder",
    ),
    "bad benchmark option": (["-m", "benchmarks.inference", "--tiny", "--options", "bogus"], "unknown option 'bogus'"),
    "experiment output is a file": (
        ["-m", "experiments.drawn_people", "--quick", "--out", "{root}/a_file"],
        "a file stands where a folder is needed",
    ),
}


def command(args: list[str], root: Path, debug: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PORTRAIT_WEIGHTS_DIR": str(root / "empty")}
    env.pop(DEBUG_ENV, None)
    full = [sys.executable, *(arg.format(root=root) for arg in args), *(["--debug"] if debug else [])]
    return subprocess.run(full, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_expected_failures_are_one_line(case, places):
    args, message = CASES[case]
    started = time.monotonic()
    done = command(args, places)
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert time.monotonic() - started < 120  # no worker respawned forever, nothing waited on a network


@pytest.mark.slow
def test_debug_shows_the_traceback(places):
    done = command(CASES["missing photo"][0], places, debug=True)
    assert done.returncode != 0 and "Traceback" in done.stderr and "InvalidImageError" in done.stderr
