"""The offline demo's model: the experiment's `full` run of split seed 0, exported to assets/demo/ for the app and the CLI.

    python -m experiments.drawn_people.demo_model [--quick] [--out DIR] [--assets assets/demo]

DIR is the experiment's own folder for seed 0 (default out/drawn-people/seed-0, what
`python -m experiments.drawn_people` makes), claimed with the runner's fingerprint: a finished full run
is exported as it is, with no training; otherwise the runner's stages for seed 0 run there up to its
`full` run and its measurer (drawn people, the stand-ins (VAE, φ) and the text-only base on training
people, the measurer, then the full run: STEA + DIP + ECAC), and the experiment later finds them done.
On a shared machine, run it with OMP_NUM_THREADS=1: models this small lose to thread contention.
Then it writes ASSETS: `model/` (a saved PortraitBooth pipeline: the trained VAE, φ, UNet and STEA,
the preset's random text encoder), `people/` (the seed's test people, who no training step has seen:
each person's reference frame and its aligned crop), `measurer.safetensors` (the trait reader, which
saw training people only), and `demo.json`, which records how all of it was made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml
from diffusers import EulerDiscreteScheduler

from portrait.exits import CommandParser, positive_int
from portrait.exits import run as run_command
from portrait.files import atomic_path, write_text
from portrait.pipeline import PortraitBoothPipeline

from .runner import FULL, QUICK, claim, fingerprint
from .stages import RECIPE, Experiment, Scale
from .workers import Stages, quiet
from .world import TRAITS, DrawnPeopleConfig, draw_frame, split_people

PROG = "python -m experiments.drawn_people.demo_model"
REPOSITORY = Path(__file__).resolve().parents[2]


SEED = 0  # the split seed whose `full` run the demo serves
REFERENCE_EXPRESSION = "neutral"  # what the example people's reference pictures show


def default_out(scale: Scale) -> Path:
    """The experiment's own seed-0 folder, where `python -m experiments.drawn_people` trains it."""
    return Path("out") / ("drawn-people-quick" if scale == QUICK else "drawn-people") / f"seed-{SEED}"


def train_full(out: Path, scale: Scale, workers: int) -> dict[str, float]:
    """The experiment's stages for seed 0 up to its `full` run and its measurer; seconds per stage as they ran.

    OUT is claimed as the runner claims a seed folder, except that one made by other code is refused, not
    emptied: it may hold the experiment's other runs and evaluations."""
    claim(out, fingerprint(scale, SEED), rerun_stale=False)
    experiment = Experiment(out, scale, SEED)
    with Stages(workers) as stages:  # the runner's stages for one seed, up to its `full` run and its measurer
        stages.here(experiment, "prepare")
        stages.side_by_side(experiment, [("train_run", ("full",)), ("measurer", ())])
    record = out / "stage_seconds.json"  # written by the stages that ran, here or in the experiment
    return json.loads(record.read_text()) if record.is_file() else {}


def export(out: Path, assets: Path, scale: Scale, seconds: dict[str, float]) -> None:
    """ASSETS/model, people/, people.json, measurer.safetensors and demo.json, from the stages in OUT."""
    experiment = Experiment(out, scale, SEED)
    pipe = PortraitBoothPipeline.from_pretrained(experiment.base, portrait_weights=out / "runs" / "full" / "final")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # the sampler the app uses
    with atomic_path(assets / "model") as partial:
        pipe.save_pretrained(partial)
    shutil.copyfile(out / "measurer.safetensors", assets / "measurer.safetensors")
    write_example_people(assets, experiment.people)
    files = sorted(path for path in assets.rglob("*") if path.is_file() and path.suffix in (".safetensors", ".png"))
    record = {
        "what": f"the drawn-people experiment's `full` model (STEA + DIP + ECAC) at its {'quick' if scale == QUICK else 'full'} "
        f"scale, split seed {SEED}, trained on a CPU",
        "command": f"OMP_NUM_THREADS=1 {PROG}{' --quick' if scale == QUICK else ''}"
        + ("" if out == default_out(scale) else f" --out {out}"),
        "seed": SEED,
        "code_version": json.loads((out / "code_version.json").read_text()),
        "fingerprint": json.loads((out / "fingerprint.json").read_text()),
        "recipe": yaml.safe_load(RECIPE.read_text()),
        "scale": json.loads(json.dumps(dataclasses.asdict(scale))),
        "stages_seconds": seconds,
        "sampler": "EulerDiscreteScheduler (SD 1.5's noise schedule); the app's default 50 steps, guidance 5",
        "files": {
            str(path.relative_to(assets)): {"bytes": path.stat().st_size, "sha256": sha256(path)} for path in files
        },
    }
    write_text(assets / "demo.json", json.dumps(record, indent=1))


def write_example_people(assets: Path, world: DrawnPeopleConfig) -> None:
    """The held-out people's reference pictures, each drawn anew with its landmarks, and people.json.

    The frames are new drawings (their own jitter) of people the experiment held out; `config` lets
    the app draw new people outside the training split, and `training_people` names every person training saw."""
    split = split_people(world)
    heldout = split.test
    people = []
    for number, person in enumerate(heldout, start=1):
        rng = np.random.default_rng((world.seed, 3, *person.traits()))
        frame = draw_frame(person, REFERENCE_EXPRESSION, rng, world.size)
        image = f"people/person-{number:02d}.png"
        (assets / "people").mkdir(parents=True, exist_ok=True)
        with atomic_path(assets / image) as partial:
            frame.image.save(partial, format="PNG")
        people.append({"name": f"person {number}", "identity_word": person.word, "image": image,
                       "landmarks": np.round(frame.landmarks, 3).tolist(), "expression": REFERENCE_EXPRESSION,
                       "traits": dict(zip(TRAITS, person.traits()))})  # fmt: skip
    record = {
        "config": dataclasses.asdict(world),
        "reference_expression": REFERENCE_EXPRESSION,
        "people": people,
        "training_people": [list(person.traits()) for person in split.train],
    }
    write_text(assets / "people.json", json.dumps(record, indent=1))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the experiment's quick scale (fewer people and steps)")
    parser.add_argument(
        "--out", type=Path, help="the experiment's seed-0 folder (default out/drawn-people[-quick]/seed-0)"
    )
    parser.add_argument("--assets", type=Path, default=REPOSITORY / "assets" / "demo", help="where the demo's files go")
    parser.add_argument(
        "--workers", type=positive_int, default=2, help="the full run and the measurer trained side by side"
    )
    parser.add_argument("--train-only", action="store_true", help="stop before writing ASSETS")
    args = parser.parse_args(argv)
    quiet()
    scale = QUICK if args.quick else FULL
    out = args.out or default_out(scale)
    seconds = train_full(out, scale, args.workers)
    print(json.dumps(seconds))
    if not args.train_only:
        export(out, args.assets, scale, seconds)


if __name__ == "__main__":
    sys.exit(run_command(main, prog=PROG))
