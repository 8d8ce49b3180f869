"""Does training learn? The paper's ablations at CPU scale, judged on drawn people no step has seen.

    python -m experiments.drawn_people [--quick] [--seeds N] [--json] [--out DIR] [--workers N] [--validation]

Per split seed s (default 5 seeds, each with everything below made afresh in DIR/seed-s):
1. Drawn people (world.py): the held-out groups are drawn first (test people, recombining trait values
   that all occur in training; novel people, with a skin tone or hair colour no training frame shows;
   validation people, for choosing settings), then the training people from the rest.
2. Stand-ins for the pretrained frozen parts, trained on training people only (standins.py): the VAE
   as an autoencoder, φ as a face recogniser; and the measurer (measurer.py), a different network that
   reads traits and expressions from pixels and grades every run.
3. The base: the UNet pretrained text-only on training people (train/train.py with recipe.yaml, no
   face), the stand-in for SD 1.5's UNet. With a zero STEA it is the `untrained` row.
4. Runs from that base through train/train.py, with the same data, seed s, steps and learning rate:
   `full`; `no_face` (text only: no sample ever gets a face feature); `no_stea` (the paper's w/o STEA,
   train/configs/ablation_no_stea.yaml: STEA fuses CLIP image features, the CLIP encoder trained with
   the UNet; here the tiny CLIP ViT `clip_tiny` stands in for ViT-L/14); `no_dip` and `no_ecac`
   (ablation_no_dip.yaml, ablation_no_ecac.yaml). `--quick` trains `full` and `no_face` only.
5. Evaluation (heldout.py) of every row on the test and novel groups, Euler sampling; two test people
   in one picture, with regions and in one pass (`full` only).

DIR then holds table.md (means and 95 % intervals over seeds, paired permutation tests over people),
results.json and grid.png (seed 0). Every seed folder records the fingerprint of the recipe, the
settings and the code that made it: a folder made otherwise is rerun, never reused. `--validation`
judges the validation people instead of the test people, for choosing settings. `--json` ends with
one line: chance levels, rows, tests and the two-people table.

Every stage runs in one of `--workers` processes of one thread each, `--workers` seeds under way at a
time (on 2 free cores ~1.45× the throughput of one process of two threads for models this small; on a
busy machine, where threads of one process wait on each other, many times more).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import diffusers
import numpy as np
import torch

from portrait.errors import OptionError
from portrait.exits import CommandParser, positive_int
from portrait.files import atomic_path, write_text

from .heldout import PAIR_MODES, EvalSettings, heldout_people
from .report import GRID_COLUMNS, aggregate, markdown_tables, picture_grid
from .stages import ABLATIONS, RECIPE, REPO, ROWS, RUNS, Experiment, Scale, run_overrides
from .standins import Schedule
from .workers import Stages, quiet
from .world import DrawnPeopleConfig

__all__ = ["FULL", "QUICK", "RECIPE", "ROWS", "RUNS", "PROG", "claim", "fingerprint", "main", "run", "run_overrides"]

PROG = "python -m experiments.drawn_people"
CODE = ("experiments/drawn_people", "train", "portrait")  # the code whose version every result records

# 16×16 pictures: a 32×32 training step costs ~2.5× one at 16×16 on these CPUs (~0.22 s against ~0.09 s, one
# thread), so five 32×32 seeds would take ~2 hours on 2 cores. The full scale differs from the quick one in the
# evidence (5 seeds, 10 people per group, 50 Euler steps, every row, pairs) and in training (twice the people,
# twice the run steps), not in the picture size.
FULL = Scale(
    people=DrawnPeopleConfig(size=16, train_people=200, frames_per_person=8),
    autoencoder=Schedule(500, 3e-3),
    recognizer=Schedule(300, 3e-3),
    measurer=Schedule(600, 3e-3),
    base_steps=400,
    run_steps=1800,
    evaluation=EvalSettings(images_per_prompt=2, steps=50, pair_images=2),
    seeds=5,
)
QUICK = Scale(
    people=DrawnPeopleConfig(
        size=16, train_people=100, heldout_people=8, novel_people=8, validation_people=8, frames_per_person=6
    ),
    autoencoder=Schedule(250, 3e-3),
    recognizer=Schedule(150, 3e-3),
    measurer=Schedule(300, 3e-3),
    base_steps=200,
    # Chosen on validation people (seed 0, 4 images per ask): after 300 steps `full` identified 0.27 (seeds 0-2:
    # 0.27, 0.19, 0.21; word-only ceiling 0.25): the runs had not yet learnt to use the face, on training people
    # either (0.09, ceiling 0.08). Learning rate 5e-3 did not help (0.26, 0.24, 0.26); 800 base steps 0.30; 600 run
    # steps 0.36; 900 run steps 0.43 (no face 0.19).
    run_steps=900,
    evaluation=EvalSettings(images_per_prompt=2, steps=10, pair_images=1, attention_timesteps=(300, 700)),
    seeds=2,
    runs=("full", "no_face"),  # the claim the quick check tests; the ablations are the full scale's
)


# ------------------------------------------------------------------ results that cannot go stale
def fingerprint(scale: Scale, seed: int) -> dict:
    """What made a seed's results: the recipes, the settings and the code (hashes), and the library versions."""
    recipes = hashlib.sha256()
    for path in (RECIPE, *sorted(ABLATIONS.glob("ablation_*.yaml"))):
        recipes.update(path.name.encode() + b"\0" + path.read_bytes())
    code = hashlib.sha256()
    for path in sorted(p for folder in CODE for p in (REPO / folder).rglob("*.py")):
        code.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    settings = json.loads(json.dumps(dataclasses.asdict(scale)))
    return {"seed": seed, "recipes": recipes.hexdigest()[:16], "code": code.hexdigest()[:16], "settings": settings,
            "torch": torch.__version__, "diffusers": diffusers.__version__}  # fmt: skip


def code_version() -> dict:
    """The commit the code is at, the files that differ from it, and when and where a seed folder was started."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "uncommitted": git("status", "--porcelain").splitlines(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores"}  # fmt: skip


def claim(folder: Path, stamp: dict, rerun_stale: bool = True) -> None:
    """Make `folder` hold results of `stamp` only: kept when its fingerprint matches, else emptied and rerun
    (or, with `rerun_stale=False`, refused). A new folder records its fingerprint and code_version.json."""
    record = folder / "fingerprint.json"
    if record.is_file():
        if json.loads(record.read_text()) == stamp:
            return
        if not rerun_stale:
            raise OptionError(
                f"{folder} was made by another recipe, settings or code (its fingerprint.json): "
                f"run `{PROG}` again, or choose another --out"
            )
        logging.info("%s was made by another recipe, settings or code: rerunning it", folder)
        shutil.rmtree(folder)
    elif folder.is_dir() and any(folder.iterdir()):
        raise OptionError(
            f"{folder} holds files without a fingerprint.json, not made by this experiment; choose another --out"
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "code_version.json", json.dumps(code_version(), indent=1))
    write_text(record, json.dumps(stamp, indent=1))


def run_seed(stages: Stages, experiment: Experiment, groups: tuple[str, ...], pairs: bool) -> dict:
    """One split seed: people, stand-ins and base; then the runs and the measurer; then every evaluation."""
    stages.side_by_side(experiment, [("prepare", ())])
    stages.side_by_side(experiment, [*(("train_run", (name,)) for name in experiment.scale.runs), ("measurer", ())])
    evaluations = [("evaluate", (name, group)) for group in groups for name in experiment.scale.rows]
    stages.side_by_side(
        experiment, evaluations + ([("evaluate_pairs", (mode,)) for mode in PAIR_MODES] if pairs else [])
    )
    return experiment.results(groups, pairs)


def run(out: Path, scale: Scale, seeds: int, workers: int, validation: bool = False) -> dict:
    """Every stage of every split seed, then the statistics over seeds; returns results.json's content.

    `workers` seeds are under way at a time, their stages shared by `workers` processes of one thread
    each: on a busy machine one thread per process is many times faster than threads that wait on each other.
    """
    started = time.perf_counter()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    groups = ("validation",) if validation else ("test", "novel")
    experiments = [Experiment(out / f"seed-{seed}", scale, seed) for seed in range(seeds)]
    for experiment in experiments:
        claim(experiment.out, fingerprint(scale, experiment.seed))
    with Stages(workers) as stages, ThreadPoolExecutor(workers) as seeds_under_way:
        outcomes = [
            seeds_under_way.submit(run_seed, stages, experiment, groups, not validation) for experiment in experiments
        ]
        per_seed = {experiment.seed: outcome.result() for experiment, outcome in zip(experiments, outcomes)}
    summary = aggregate(per_seed, groups, scale.evaluation.permutations)
    results = {
        **summary,
        "seeds": seeds,
        "per_seed": per_seed,
        "sampler": per_seed[0]["groups"][groups[0]]["full"]["sampler"],
        "settings": {**json.loads(json.dumps(dataclasses.asdict(scale))), "workers": workers},
        "seconds": {**stages.seconds, "total": round(time.perf_counter() - started, 1)},
    }
    name = "validation" if validation else "results"
    write_text(out / f"{name}.json", json.dumps(results, indent=1))
    write_text(
        out / ("validation.md" if validation else "table.md"), markdown_tables(summary, list(range(seeds)), groups)
    )
    if not validation:
        first = Experiment(out / "seed-0", scale, 0)
        examples = {}
        for column in (name for name in GRID_COLUMNS if name in scale.rows):
            stored = np.load(first.out / "eval" / "test" / f"{column}.npz")
            examples[column] = {tuple(key.split("|")): stored[key] for key in stored.files}
        with atomic_path(out / "grid.png") as partial:
            picture_grid(heldout_people(first.data / "test"), examples).save(partial, format="PNG")
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer people and steps, 2 seeds, the full and no-face runs only (≈3 minutes on 2 cores)",
    )
    parser.add_argument(
        "--seeds", type=positive_int, help=f"split seeds 0..N-1 (default {FULL.seeds}; --quick {QUICK.seeds})"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the measures")
    parser.add_argument(
        "--out", type=Path, help="where every stage keeps its result (default out/drawn-people[-quick])"
    )
    parser.add_argument(
        "--workers", type=positive_int, default=min(2, os.cpu_count() or 1), help="stages run side by side"
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help="judge the validation people (for choosing settings), not the test people",
    )
    args = parser.parse_args(argv)
    quiet()
    scale = QUICK if args.quick else FULL
    out = args.out or Path("out") / ("drawn-people-quick" if args.quick else "drawn-people")
    results = run(out, scale, args.seeds or scale.seeds, args.workers, args.validation)
    print((out / ("validation.md" if args.validation else "table.md")).read_text())
    print(f"sampler {results['sampler']}; {results['seconds']['total']:.0f} s; results in {out}")
    if args.json:
        print(json.dumps({key: results[key] for key in ("chance", "rows", "tests", "pairs", "seeds", "sampler")}))
    return results
