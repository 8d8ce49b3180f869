"""README's two commands on a stock Debian/Ubuntu shell, where `python3` is the system's (pip refused, PEP 668) and
there is no `python`: setup.sh makes the project environment .venv/ and installs there, and ./python runs it."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")
# What setup.sh and ./python run besides Python (apt-get only where it has to install something, so never here).
TOOLS = ("bash", "dirname", "realpath", "rm", "id")
# torch and what only it needs: 5 GB unpacked, most of a fresh install's time (see seed_torch).
TORCH_STACK = re.compile(r"torch|torchvision|triton|nvidia-.+|cuda-.+")
ACTIVATION = ("VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PYENV_VERSION", "PYTHONHOME", "PYTHONPATH")


def readme_block(after: str) -> str:
    """The first bash block after a heading or marker of README.md, as .ci/run reads the test command."""
    text = (REPO / "README.md").read_text()
    return re.search(re.escape(after) + r".*?```bash\n(.*?)\n```", text, re.S).group(1)


def test_readme_commands_run_the_launcher():
    assert readme_block("## Two commands on a fresh machine") == "bash setup.sh && ./python app.py"
    assert readme_block("<!-- test-command -->") == "bash setup.sh --test && ./python -m pytest"


def tools_folder(folder: Path, pythons: dict[str, Path]) -> Path:
    """A folder for PATH holding the given Pythons and the system tools that setup.sh and ./python call."""
    folder.mkdir()
    for name in TOOLS:
        (folder / name).symlink_to(shutil.which(name))
    for name, target in pythons.items():
        (folder / name).symlink_to(target)
    return folder


def clean_environment(path: Path | str, **extra: str) -> dict[str, str]:
    """This shell's variables without any active environment (venv, conda, pyenv), PATH replaced."""
    env = {key: value for key, value in os.environ.items() if key not in ACTIVATION}
    return {**env, "PATH": str(path), **extra}


def fake_python(path: Path, says: str) -> Path:
    """A stand-in that only tells which one the launcher ran (the choice is what these cases check)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {says}\n")
    path.chmod(0o755)
    return path


def test_the_launcher_runs_the_active_environment_else_the_project_venv_else_the_python_on_path(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(REPO / "python", project / "python")
    only_python3 = tools_folder(tmp_path / "stock", {"python3": fake_python(tmp_path / "system/python3", "python3")})
    both = tools_folder(
        tmp_path / "both",
        {"python": fake_python(tmp_path / "env/python", "python"), "python3": tmp_path / "system/python3"},
    )

    def launched(path: str, **extra: str) -> subprocess.CompletedProcess:
        env = clean_environment(path, **extra)
        return subprocess.run([project / "python"], cwd=project, env=env, capture_output=True, text=True, timeout=30)

    assert launched(f"{only_python3}").stdout == "python3\n"
    assert launched(f"{project}:.:{only_python3}").stdout == "python3\n"  # never itself, found on PATH
    assert launched(f"{both}").stdout == "python\n"
    fake_python(project / ".venv/bin/python", "project venv")
    assert launched(f"{both}").stdout == "project venv\n"
    assert launched(f"{both}", VIRTUAL_ENV=str(tmp_path / "env")).stdout == "python\n"
    assert launched(f"{both}", CONDA_PREFIX=str(tmp_path / "env")).stdout == "python\n"
    (project / ".venv/bin/python").unlink()
    nothing = launched(f"{tools_folder(tmp_path / 'none', {})}")
    assert nothing.returncode == 127 and "neither python nor python3 is on PATH" in nothing.stderr
    assert len(nothing.stderr.splitlines()) == 1


def system_python_version() -> tuple[int, int]:
    done = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    major, minor = done.stdout.split()
    return int(major), int(minor)


def ensure_stock_system_python() -> None:
    """Debian's python3 as a stock machine has it, installed with apt-get when root; else the test is skipped."""
    if not SYSTEM_PYTHON.exists():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip(f"no {SYSTEM_PYTHON}, and installing Debian's python3 needs root and apt-get")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "python3"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    marker = "import os, sysconfig; print(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED'))"
    found = subprocess.run([str(SYSTEM_PYTHON), "-c", marker], capture_output=True, text=True, check=True).stdout
    if not Path(found.strip()).is_file():
        pytest.skip(
            f"{SYSTEM_PYTHON} has no EXTERNALLY-MANAGED marker (before Debian 12 / Ubuntu 23.04): setup would "
            "install into the system, which is not the stock case tested here"
        )


def seed_torch(into: Path) -> None:
    """Links this environment's torch stack (the same cp311 manylinux wheels, unpacked) into a folder for PYTHONPATH.

    A fresh install writes 6.6 GB, 5.3 GB of it torch, triton and the CUDA libraries (its pip step: 105 s on 2 cores,
    82 CPU-seconds). With them on PYTHONPATH pip finds torch==2.14.1 and torchvision==0.29.1 satisfied and installs
    everything else into the venv for real. Only when the system Python is this Python's version (else: full install).
    """
    into.mkdir()
    for dist in importlib.metadata.distributions():
        if TORCH_STACK.fullmatch((dist.metadata["Name"] or "").lower().replace("_", "-")):
            site = Path(dist.locate_file(""))
            for top in {Path(file).parts[0] for file in dist.files or () if not str(file).startswith("..")}:
                if not (into / top).exists():
                    (into / top).symlink_to(site / top)


@pytest.fixture
def stock_checkout(tmp_path):
    """A copy of this checkout and a stock shell's environment: only the system python3 and a few tools on PATH."""
    ensure_stock_system_python()
    checkout = tmp_path / "checkout"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    path = tools_folder(tmp_path / "bin", {"python3": SYSTEM_PYTHON})
    extra = {}
    if system_python_version() == sys.version_info[:2]:
        seed_torch(tmp_path / "torch")
        extra["PYTHONPATH"] = str(tmp_path / "torch")
    yield checkout, clean_environment(path, **extra)
    shutil.rmtree(checkout / ".venv", ignore_errors=True)  # gigabytes: not kept with pytest's last three temp dirs


@pytest.mark.slow
def test_setup_on_a_stock_shell_makes_the_project_venv_and_the_launcher_runs_it(stock_checkout, tmp_path):
    checkout, env = stock_checkout

    def setup() -> subprocess.CompletedProcess:
        done = subprocess.run(["bash", "setup.sh"], cwd=checkout, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        return done

    venv = checkout / ".venv"
    # What `python3 -m venv` leaves when Debian's ensurepip is missing: a venv without pip, made again by setup.
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", venv], env=env, check=True)
    assert "making the project environment .venv/" in setup().stdout
    made = (venv / "pyvenv.cfg").stat().st_mtime_ns
    # From another folder, so that only the install (editable: the checkout's sources) can find the package.
    probe = (
        "import sys, portrait as p, diffusers as d, facenet_pytorch as f; "
        "print(sys.prefix, p.__file__, d.__file__, f.__file__)"
    )
    shown = subprocess.run(
        [str(checkout / "python"), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    prefix, package, dependency, facenet = map(Path, shown.stdout.split())
    assert prefix == venv and package == checkout / "portrait/__init__.py"
    assert dependency.is_relative_to(venv) and facenet.is_relative_to(venv)

    again = setup()  # runs again on what the first run made: nothing made anew
    assert "making" not in again.stdout and f"ready in {venv}" in again.stdout
    assert (venv / "pyvenv.cfg").stat().st_mtime_ns == made
