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
   (ablation_no_dip.yaml, ablation_no_ecac.yaml).
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
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from portrait.engine import ModelSource, load_pipeline
from portrait.errors import OptionError
from portrait.exits import CommandParser, positive_int
from portrait.face.alignment import align_faces
from portrait.files import atomic_path, write_text
from portrait.identity.encoder import IdentityEncoder
from portrait.images import image_to_tensor
from portrait.pipeline import PortraitBoothPipeline
from portrait.presets import build_random_components
from train.config import TrainConfig, recipe_changes
from train.data_format import read_manifest
from train.dataset import PortraitDataset
from train.train import train

from .heldout import (
    PAIR_MODES,
    EvalSettings,
    attention_in_mask,
    chance_levels,
    generate_and_judge,
    heldout_people,
    judge_pairs,
    seed_interval,
    sign_flip_p,
    summarize_pairs,
    summarize_single,
)
from .measurer import TraitReader, reading_accuracy, train_trait_reader
from .standins import Schedule, train_autoencoder, train_recognizer
from .world import EXPRESSIONS, TRAITS, DrawnPeopleConfig, write_drawn_people

PROG = "python -m experiments.drawn_people"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RECIPE = HERE / "recipe.yaml"
ABLATIONS = REPO / "train" / "configs"  # the project's ablation recipes
CLIP_STAND_IN = "clip_tiny"  # the paper's w/o STEA fuses CLIP ViT-L/14; at this scale its tiny architecture
RUNS = ("full", "no_face", "no_stea", "no_dip", "no_ecac")
ROWS = ("untrained", *RUNS)
LABELS = {"untrained": "untrained (base, STEA zero)", "full": "full (STEA + DIP + ECAC)", "no_face": "no face feature (text only)",
          "no_stea": "w/o STEA (CLIP image features, encoder trained)", "no_dip": "w/o DIP", "no_ecac": "w/o ECAC"}  # fmt: skip
GROUPS = {"test": "test people (new combinations of seen trait values)",
          "novel": "novel people (a skin tone or hair colour no training frame shows)",
          "validation": "validation people (for choosing settings)"}  # fmt: skip
MEASURES = ("id_acc", "id_sim", "expr_acc", "expr_leak", "attn_id_in_mask", "attn_expr_in_mask")
PAIR_MEASURES = ("right_person", "swapped", "expr_acc", "cost_ratio")
GRID_COLUMNS = {"full": "full", "no_face": "no face", "no_stea": "w/o STEA (CLIP)", "no_ecac": "w/o ECAC"}
CODE = ("experiments/drawn_people", "train", "portrait")  # the code whose version every result records


@dataclass(frozen=True)
class Scale:
    people: DrawnPeopleConfig  # its seed is replaced by each split seed
    autoencoder: Schedule
    recognizer: Schedule
    measurer: Schedule
    base_steps: int
    run_steps: int
    evaluation: EvalSettings
    seeds: int  # split seeds when --seeds is not given


FULL = Scale(
    people=DrawnPeopleConfig(size=32, train_people=200, frames_per_person=8),
    autoencoder=Schedule(1200, 3e-3),
    recognizer=Schedule(400, 3e-3),
    measurer=Schedule(1500, 3e-3),
    base_steps=1500,
    run_steps=1800,
    evaluation=EvalSettings(images_per_prompt=2, steps=50, pair_images=2),
    seeds=5,
)
QUICK = Scale(
    people=DrawnPeopleConfig(size=16, train_people=100, heldout_people=8, novel_people=8, validation_people=8, frames_per_person=6),
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
    seeds=3,
)


def run_overrides(name: str) -> dict:
    """What each run changes in the recipe: the project's ablation recipes, and text-only for no_face."""
    if name == "full":
        return {}
    if name == "no_face":
        return {"text_only_fraction": 1.0}  # no sample ever gets a face feature: the UNet learns from text alone
    overrides = recipe_changes(ABLATIONS / f"ablation_{name}.yaml")
    if "fusion_encoder" in overrides:
        overrides["fusion_encoder"] = CLIP_STAND_IN
    return overrides


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


def claim(folder: Path, stamp: dict) -> None:
    """Make `folder` hold results of `stamp` only: kept when its fingerprint matches, else emptied and rerun."""
    record = folder / "fingerprint.json"
    if record.is_file():
        if json.loads(record.read_text()) == stamp:
            return
        logging.info("%s was made by another recipe, settings or code: rerunning it", folder)
        shutil.rmtree(folder)
    elif folder.is_dir() and any(folder.iterdir()):
        raise OptionError(f"{folder} holds files without a fingerprint.json, not made by this experiment; choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    write_text(record, json.dumps(stamp, indent=1))


# ------------------------------------------------------------------ one split seed
class Experiment:
    """The stages of one split seed, each reading what the earlier ones left in `out`; picklable, so
    stages run in workers."""

    def __init__(self, out: Path, scale: Scale, seed: int):
        self.out, self.scale, self.seed = out, scale, seed
        self.people = dataclasses.replace(scale.people, seed=seed)
        self.data = out / "data"
        self.train_set = self.data / "train"
        self.standins, self.base = out / "standins", out / "base"

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "training_frames"}  # not the cache

    def recipe(self, base: Path, steps: int, **overrides) -> TrainConfig:
        return TrainConfig.load(RECIPE, base=str(base), max_steps=steps, resolution=self.people.size, seed=self.seed, **overrides)

    @functools.cached_property
    def training_frames(self) -> dict[str, torch.Tensor]:
        return frames(self.train_set)

    # ------------------------------------------------------------------ training stages (training people only)
    def prepare(self) -> str:
        """Everything before the runs, in order (each needs the one before): people, stand-ins, base."""
        done = []
        for stage in (self.drawn_people, self.autoencoder, self.recognizer, self.assemble_standins, self.pretrain_base):
            started = time.perf_counter()
            message = stage()
            done += [f"{message} ({time.perf_counter() - started:.0f} s)"] if message else []
        self.__dict__.pop("training_frames", None)
        return "; ".join(done)

    def drawn_people(self) -> str:
        write_drawn_people(self.data, self.people)
        return ""

    def components(self) -> dict:
        """The `drawn` preset's models with random weights (this seed's), sized for this scale's pictures;
        Euler sampling, the sampler every evaluation uses."""
        components = build_random_components("drawn", seed=self.seed)
        size = self.people.size
        components["vae"].register_to_config(sample_size=size)
        components["unet"].register_to_config(sample_size=size // 2 ** (len(components["vae"].config.block_out_channels) - 1))
        components["scheduler"] = EulerDiscreteScheduler.from_config(components["scheduler"].config)
        return components

    def autoencoder(self) -> str:
        folder = self.standins / "vae"
        if (folder / "config.json").is_file():
            return ""
        data = self.training_frames
        vae = self.components()["vae"]
        error = train_autoencoder(vae, data["frames"], data["masks"], dataclasses.replace(self.scale.autoencoder, seed=self.seed))
        with atomic_path(folder) as partial:
            vae.save_pretrained(partial)
        return f"seed {self.seed} autoencoder: reconstruction MSE {error:.4f}"

    def recognizer(self) -> str:
        folder = self.standins / "identity_encoder"
        if (folder / "config.json").is_file():
            return ""
        data = self.training_frames
        encoder = self.components()["fusion_encoder"]  # the preset's φ
        crops = torch.cat([data["crops"], align_faces((data["frames"] + 1) / 2, data["landmarks"])])
        schedule = dataclasses.replace(self.scale.recognizer, seed=self.seed)
        accuracy = train_recognizer(encoder, crops, torch.cat([data["person"], data["person"]]), schedule)
        with atomic_path(folder) as partial:
            encoder.save_pretrained(partial)
        return f"seed {self.seed} φ: accuracy on training people {accuracy:.3f}"

    def assemble_standins(self) -> str:
        """The pipeline of stand-ins: trained VAE and φ, the other parts random (text encoder) or untrained."""
        if (self.standins / "model_index.json").is_file():
            return ""
        components = self.components()
        components["vae"] = AutoencoderKL.from_pretrained(self.standins / "vae")
        components["fusion_encoder"] = IdentityEncoder.from_pretrained(self.standins / "identity_encoder")  # φ
        PortraitBoothPipeline(**components).save_pretrained(self.standins)
        return ""

    def measurer(self) -> str:
        weights = self.out / "measurer.safetensors"
        if weights.is_file():
            return ""
        data = self.training_frames
        vae = AutoencoderKL.from_pretrained(self.standins / "vae")
        with torch.no_grad():
            decoded = torch.cat([vae.decode(vae.encode(chunk).latent_dist.mode()).sample for chunk in data["frames"].split(256)])
        reader = TraitReader(TRAITS, len(EXPRESSIONS))
        schedule = dataclasses.replace(self.scale.measurer, seed=self.seed)
        accuracy = train_trait_reader(reader, [data["frames"], decoded.clamp(-1, 1)], data["traits"], data["expression"], schedule)
        with atomic_path(weights) as partial:
            save_file(reader.state_dict(), partial)
        return f"seed {self.seed} measurer: accuracy on training frames {accuracy:.3f}"

    def load_measurer(self) -> TraitReader:
        reader = TraitReader(TRAITS, len(EXPRESSIONS))
        reader.load_state_dict(load_file(self.out / "measurer.safetensors"))
        return reader.eval()

    def pretrain_base(self) -> str:
        """The UNet taught text-to-image on training people (no face), saved with the stand-ins as the runs' base."""
        if (self.base / "model_index.json").is_file():
            return ""
        config = self.recipe(self.standins, self.scale.base_steps, text_only_fraction=1.0, identity_weight=0.0, localization_weight=0.0)
        final = train(config, self.train_set, self.out / "runs" / "base", resume="latest")
        pipe = PortraitBoothPipeline.from_pretrained(self.standins, unet=UNet2DConditionModel.from_pretrained(final / "unet"))
        with atomic_path(self.base) as partial:
            pipe.save_pretrained(partial)
        return f"seed {self.seed} base: {self.scale.base_steps} text-only steps"

    def train_run(self, name: str) -> str:
        final = self.out / "runs" / name / "final"
        if (final / "stea").is_dir():
            return ""
        config = self.recipe(self.base, self.scale.run_steps, **run_overrides(name))
        train(config, self.train_set, self.out / "runs" / name, resume="latest")
        return f"seed {self.seed} {name}: {self.scale.run_steps} steps"

    # ------------------------------------------------------------------ evaluation stages
    def pipeline(self, name: str) -> PortraitBoothPipeline:
        """A row's pipeline on the base: its trained weights, or (untrained) a zero-residual STEA."""
        weights = None if name == "untrained" else self.out / "runs" / name / "final"
        bare = dict(safety_checker=False, watermark=False, device="cpu", dtype="fp32")  # what training's validation sees
        pipe = load_pipeline(ModelSource(base=str(self.base), portrait_weights=weights, untrained_stea=name == "untrained", **bare))
        if not isinstance(pipe.scheduler, EulerDiscreteScheduler):  # the sampler README names
            raise RuntimeError(f"{self.base} samples with {type(pipe.scheduler).__name__}, not Euler")
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def evaluate(self, name: str, group: str) -> str:
        """The measures of one row on one held-out group, kept in eval/<group>/<name>.json (examples in .npz)."""
        measures, pictures = self.out / "eval" / group / f"{name}.json", self.out / "eval" / group / f"{name}.npz"
        if measures.is_file() and pictures.is_file():
            return ""
        pipe, reader, settings = self.pipeline(name), self.load_measurer(), self.scale.evaluation
        people = heldout_people(self.data / group)
        judgement = generate_and_judge(pipe, people, reader, settings)
        row = summarize_single(judgement)
        row["chance"] = chance_levels(people, judgement)
        row["sampler"] = f"{type(pipe.scheduler).__name__}, {settings.steps} steps, guidance {settings.guidance}"
        # Read only for its data settings and ECAC layers: nothing trains (max_steps must still be ≥ 1).
        config = self.recipe(self.base, 1, unconditional_fraction=0.0, text_only_fraction=0.0, flip_probability=0.0)
        attention = attention_in_mask(pipe, PortraitDataset(self.data / group, pipe.tokenizer, config), config.ecac_layers, settings)
        row.update(attn_id_in_mask=attention["identity"], attn_expr_in_mask=attention["expression"], mask_area=attention["mask_area"])
        with atomic_path(pictures) as partial, open(partial, "wb") as handle:
            np.savez(handle, **{f"{person}|{expression}": image for (person, expression), image in judgement.examples.items()})
        write_text(measures, json.dumps(row, indent=1))
        return f"seed {self.seed} {group} {name}: identification {row['id_acc']:.2f}, expression {row['expr_acc']:.2f}"

    def evaluate_pairs(self, mode: str) -> str:
        """Two test people in one picture (`full`), made in `mode`; kept in eval/pairs/<mode>.json (and .png)."""
        measures = self.out / "eval" / "pairs" / f"{mode}.json"
        if measures.is_file():
            return ""
        pipe, reader = self.pipeline("full"), self.load_measurer()
        judgement = judge_pairs(pipe, heldout_people(self.data / "test"), reader, mode, self.scale.evaluation)
        summary = summarize_pairs(judgement)
        with atomic_path(measures.with_suffix(".png")) as partial:
            Image.fromarray(judgement.example).save(partial, format="PNG")
        write_text(measures, json.dumps(summary, indent=1))
        return f"seed {self.seed} two people, {mode}: right person {summary['right_person']:.2f}, swapped {summary['swapped']:.2f}"

    def results(self, groups: tuple[str, ...], pairs: bool) -> dict:
        """What the evaluation stages left, with the split's novel trait and the measurer's held-out reading."""
        read = lambda path: json.loads(path.read_text())  # noqa: E731
        people = read(self.data / "people.json")
        reader, held = self.load_measurer(), frames(self.data / "test")
        return {
            "novel_trait": people["novel_trait"],
            "measurer_accuracy_test_frames": round(reading_accuracy(reader, held["frames"], held["traits"], held["expression"]), 4),
            "groups": {group: {name: read(self.out / "eval" / group / f"{name}.json") for name in ROWS} for group in groups},
            "pairs": {mode: read(self.out / "eval" / "pairs" / f"{mode}.json") for mode in PAIR_MODES} if pairs else {},
        }


def frames(root: Path) -> dict[str, torch.Tensor]:
    """Every sample of a drawn set as tensors: frames in [-1, 1], masks, φ crops, landmarks and labels."""
    samples = read_manifest(root)

    def pictures(names, channels: int = 3) -> torch.Tensor:
        return torch.stack([image_to_tensor(Image.open(root / name).convert("RGB"))[:channels] for name in names])

    return {
        "frames": pictures(s.image for s in samples) * 2 - 1,
        "masks": pictures((s.mask for s in samples), channels=1),
        "crops": pictures(s.reference for s in samples),
        "landmarks": torch.tensor([s.landmarks for s in samples]),
        "person": torch.tensor([s.meta["person"] for s in samples]),
        "traits": torch.tensor([s.meta["traits"] for s in samples]),
        "expression": torch.tensor([EXPRESSIONS.index(s.expression) for s in samples]),
    }


# ------------------------------------------------------------------ side by side
def _worker_setup(threads: int) -> None:
    torch.set_num_threads(threads)
    _quiet()


def _stage(experiment: Experiment, method: str, args: tuple) -> tuple[str | None, float]:
    started = time.perf_counter()
    message = getattr(experiment, method)(*args)
    return message, round(time.perf_counter() - started, 1)


class Stages:
    """Runs stages here (all threads) or side by side in `workers` processes of one thread each."""

    def __init__(self, workers: int):
        self.workers = workers
        self.seconds: dict[str, float] = {}
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "Stages":
        if self.workers > 1:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            context = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_worker_setup, initargs=(threads,))
            # Start the workers now, so that their imports overlap the first stages, which run here; they
            # inherit TQDM_DISABLE (read when they import tqdm): no interleaved progress bars.
            previous = os.environ.get("TQDM_DISABLE")
            os.environ["TQDM_DISABLE"] = "1"
            try:
                for _ in range(self.workers):
                    self.pool.submit(time.sleep, 0)
            finally:
                if previous is None:
                    del os.environ["TQDM_DISABLE"]
                else:
                    os.environ["TQDM_DISABLE"] = previous
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def here(self, experiment: Experiment, method: str, *args) -> None:
        self._record(experiment, method, args, _stage(experiment, method, args))

    def side_by_side(self, experiment: Experiment, stages: list[tuple[str, tuple]]) -> None:
        """Independent stages, taken up by free workers in the order given."""
        if self.pool is None:
            for method, args in stages:
                self.here(experiment, method, *args)
            return
        futures = [self.pool.submit(_stage, experiment, method, args) for method, args in stages]
        for (method, args), future in zip(stages, futures):
            self._record(experiment, method, args, future.result())

    def _record(self, experiment: Experiment, method: str, args: tuple, outcome: tuple[str | None, float]) -> None:
        message, elapsed = outcome
        if message:
            logging.info("%s (%.0f s)", message, elapsed)
        self.seconds["_".join((f"seed{experiment.seed}", method, *map(str, args)))] = elapsed


# ------------------------------------------------------------------ across seeds
def aggregate(per_seed: dict[int, dict], groups: tuple[str, ...], permutations: int) -> dict:
    """Seed-level means with 95 % t intervals, and one-sided paired sign-flip tests over every seed's people:
    does `full` identify better than each other row, and better than the word-only ceiling?"""
    seeds = sorted(per_seed)
    summary: dict = {"chance": {}, "rows": {}, "tests": {}, "pairs": {}}
    for group in groups:
        rows = {name: [per_seed[s]["groups"][group][name] for s in seeds] for name in ROWS}
        chances = [row["chance"] for row in rows["full"]]
        summary["chance"][group] = {
            key: round(float(np.mean([c[key] for c in chances])), 4) for key in ("identification", "word_only_ceiling", "expression_best_constant")
        } | {"face_area": round(float(np.mean([row["mask_area"] for row in rows["full"]])), 4)}  # fmt: skip
        summary["rows"][group] = {
            name: {measure: _interval([row[measure] for row in rows[name]]) for measure in MEASURES} for name in ROWS
        }
        full = np.concatenate([row["per_person"]["id_acc"] for row in rows["full"]])
        ceiling = np.concatenate([c["word_only_ceiling_per_person"] for c in chances])
        tests = {"full_vs_word_only_ceiling": _test(full - ceiling, permutations)}
        for name in ROWS:
            if name != "full":
                other = np.concatenate([row["per_person"]["id_acc"] for row in rows[name]])
                tests[f"full_vs_{name}"] = _test(full - other, permutations)
        summary["tests"][group] = tests
    if all(per_seed[s]["pairs"] for s in seeds):
        summary["pairs"] = {
            mode: {measure: _interval([per_seed[s]["pairs"][mode][measure] for s in seeds]) for measure in PAIR_MEASURES}
            for mode in PAIR_MODES
        }
    return summary


def _interval(values: list[float]) -> dict:
    mean, low, high = seed_interval(values)
    return {"mean": round(mean, 4), "low": round(low, 4), "high": round(high, 4), "per_seed": [round(v, 4) for v in values]}


def _test(differences: np.ndarray, permutations: int) -> dict:
    return {"difference": round(float(differences.mean()), 4), "people": len(differences), "p": sign_flip_p(differences, permutations)}


# ------------------------------------------------------------------ reporting
def markdown_tables(summary: dict, seeds: list[int], groups: tuple[str, ...]) -> str:
    """The tables of `summary` (from `aggregate` over the split seeds `seeds`), in markdown."""

    def cell(value: dict) -> str:
        if len(seeds) < 2:
            return f"{value['mean']:.2f}"
        return f"{value['mean']:.2f} [{value['low']:.2f}, {value['high']:.2f}]"

    lines = []
    for group in groups:
        rows, tests, chance = summary["rows"][group], summary["tests"][group], summary["chance"][group]
        people = tests["full_vs_word_only_ceiling"]["people"]
        lines += [
            f"**{GROUPS[group]}**: {len(seeds)} split seeds, {people} people in all; mean [95 % interval over seeds]",
            "",
            "| run | identification | identity similarity | expression accuracy | expression leak | identity-token attention in face "
            "| expression-token attention in face | full − this run, identification (p over people) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in ROWS:
            row = rows[name]
            test = tests.get(f"full_vs_{name}")
            versus = f"{test['difference']:+.2f} (p {test['p']:.2g})" if test else "–"
            lines.append(
                f"| {LABELS[name]} | {cell(row['id_acc'])} | {cell(row['id_sim'])} | {cell(row['expr_acc'])} | "
                f"{cell(row['expr_leak'])} | {cell(row['attn_id_in_mask'])} | {cell(row['attn_expr_in_mask'])} | {versus} |"
            )
        ceiling = tests["full_vs_word_only_ceiling"]
        lines += [
            f"| *chance* | {chance['identification']:.2f} (1 of K); word-only ceiling {chance['word_only_ceiling']:.2f} | – "
            f"| {chance['expression_best_constant']:.2f} (best constant answer; every expression asked equally) | – "
            f"| {chance['face_area']:.2f} (the face's share of the picture) | {chance['face_area']:.2f} "
            f"| full − word-only ceiling: {ceiling['difference']:+.2f} (p {ceiling['p']:.2g}) |",
            "",
            f"Identification per seed ({group}):",
            "",
            "| run | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---|" + "---|" * len(seeds),
        ]
        lines += [f"| {LABELS[name]} | " + " | ".join(f"{v:.2f}" for v in rows[name]["id_acc"]["per_seed"]) + " |" for name in ROWS]
        lines.append("")
    if summary["pairs"]:
        lines += [
            f"**Two test people in one picture** (full model, each in their own half; {len(seeds)} seeds; mean [95 % interval over seeds])",
            "",
            "| made | right person in their half | swapped (the other person read) | expression per person | time vs one person |",
            "|---|---|---|---|---|",
        ]
        names = {"regions": "regions (MultiDiffusion, the paper)", "one-pass": "one pass (both words augmented in one prompt)"}
        for mode, row in summary["pairs"].items():
            lines.append(
                f"| {names[mode]} | {cell(row['right_person'])} | {cell(row['swapped'])} | {cell(row['expr_acc'])} "
                f"| {cell(row['cost_ratio'])}× |"
            )
        lines.append("")
    return "\n".join(lines)


def picture_grid(people: list, examples: dict[str, dict], count: int = 6, scale: int = 3) -> Image.Image:
    """Rows: (held-out person, asked expression); columns: the reference frame, then a run's first image."""
    size = people[0].frame.shape[-1] * max(scale, 96 // people[0].frame.shape[-1])
    label = 14
    chosen = [(person, expression) for person in people for expression in EXPRESSIONS if expression != person.expression]
    chosen = chosen[:: max(1, len(chosen) // count)][:count]
    grid = Image.new("RGB", ((len(GRID_COLUMNS) + 1) * size, label + len(chosen) * size), "white")
    draw = ImageDraw.Draw(grid)
    for column, title in enumerate(("held-out reference", *GRID_COLUMNS.values())):
        draw.text((column * size + 2, 1), title, fill="black")
    for row, (person, expression) in enumerate(chosen):
        top = label + row * size
        frame = ((person.frame.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
        grid.paste(Image.fromarray(frame).resize((size, size), Image.NEAREST), (0, top))
        draw.text((2, top + 2), f"{person.expression} -> {expression}", fill="white", stroke_width=1, stroke_fill="black")
        for column, name in enumerate(GRID_COLUMNS, start=1):
            image = Image.fromarray(examples[name][(str(person.index), expression)])
            grid.paste(image.resize((size, size), Image.NEAREST), (column * size, top))
    return grid


def _quiet() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("diffusers", "train", "portrait", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()


def run_seed(stages: Stages, experiment: Experiment, groups: tuple[str, ...], pairs: bool) -> dict:
    """One split seed: people, stand-ins and base; then the runs and the measurer; then every evaluation."""
    stages.side_by_side(experiment, [("prepare", ())])
    stages.side_by_side(experiment, [*(("train_run", (name,)) for name in RUNS), ("measurer", ())])
    evaluations = [("evaluate", (name, group)) for group in groups for name in ROWS]
    stages.side_by_side(experiment, evaluations + ([("evaluate_pairs", (mode,)) for mode in PAIR_MODES] if pairs else []))
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
        outcomes = [seeds_under_way.submit(run_seed, stages, experiment, groups, not validation) for experiment in experiments]
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
    write_text(out / ("validation.md" if validation else "table.md"), markdown_tables(summary, list(range(seeds)), groups))
    if not validation:
        first = Experiment(out / "seed-0", scale, 0)
        examples = {}
        for column in GRID_COLUMNS:
            stored = np.load(first.out / "eval" / "test" / f"{column}.npz")
            examples[column] = {tuple(key.split("|")): stored[key] for key in stored.files}
        with atomic_path(out / "grid.png") as partial:
            picture_grid(heldout_people(first.data / "test"), examples).save(partial, format="PNG")
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16×16 pictures, fewer people and steps, 3 seeds (≈3 minutes)")
    parser.add_argument("--seeds", type=positive_int, help=f"split seeds 0..N-1 (default {FULL.seeds}; --quick {QUICK.seeds})")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the measures")
    parser.add_argument("--out", type=Path, help="where every stage keeps its result (default out/drawn-people[-quick])")
    parser.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1), help="stages run side by side")
    parser.add_argument("--validation", action="store_true", help="judge the validation people (for choosing settings), not the test people")
    args = parser.parse_args(argv)
    _quiet()
    scale = QUICK if args.quick else FULL
    out = args.out or Path("out") / ("drawn-people-quick" if args.quick else "drawn-people")
    results = run(out, scale, args.seeds or scale.seeds, args.workers, args.validation)
    print((out / ("validation.md" if args.validation else "table.md")).read_text())
    print(f"sampler {results['sampler']}; {results['seconds']['total']:.0f} s; results in {out}")
    if args.json:
        print(json.dumps({key: results[key] for key in ("chance", "rows", "tests", "pairs", "seeds", "sampler")}))
    return results
