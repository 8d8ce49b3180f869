"""Does training learn? The paper's ablations at CPU scale, judged on drawn people no step has seen.

    python -m experiments.drawn_people [--quick] [--json] [--out DIR] [--workers N]

1. Drawn people (world.py): training people and held-out people.
2. Stand-ins for the pretrained frozen parts, trained on training people only (standins.py):
   the VAE as an autoencoder, φ as a face recogniser; and the measurer (measurer.py), a
   different network that reads traits and expressions from pixels and grades every run.
3. The base: the UNet pretrained text-only on training people, the stand-in for SD 1.5's UNet
   (train/train.py with recipe.yaml, no face). With its untrained STEA it is the `untrained` row.
4. Runs from that base through train/train.py, with the same data, seed, steps and learning rate:
   `full`; `no_stea` (text only: no sample ever gets a face feature); `no_dip` and `no_ecac` (the
   recipes ablation_no_dip.yaml and ablation_no_ecac.yaml).
5. Evaluation on held-out people (heldout.py), written to DIR: table.md, results.json,
   grid.png (held-out reference | full | w/o STEA | w/o ECAC).

The four runs and the measurer train side by side in `--workers` processes of one thread each: on
2 cores that is ~1.45× the throughput of one process of two threads, for models this small. Every stage keeps its result in DIR and is skipped when
done, so a stopped run continues. `--quick` is the same experiment on 16×16 pictures with fewer
people and steps. `--json` prints one line: `chance` and, per run, id_acc, id_sim, expr_acc,
expr_leak, attn_in_mask.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from portrait.commands import CommandParser, positive_int
from portrait.engine import ModelSource, load_pipeline
from portrait.face.alignment import align_faces
from portrait.face.analyzer import image_to_tensor
from portrait.files import atomic_path, write_text
from portrait.identity.encoder import IdentityEncoder
from portrait.pipeline import PortraitBoothPipeline
from portrait.presets import build_random_components
from train.config import TrainConfig
from train.data_format import read_manifest
from train.dataset import PortraitDataset
from .world import EXPRESSIONS, TRAITS, DrawnPeopleConfig, write_drawn_people
from .heldout import EvalSettings, attention_in_mask, generate_and_judge, heldout_people, summarize
from .standins import Schedule, train_autoencoder, train_recognizer
from train.train import train
from .measurer import TraitReader, reading_accuracy, train_trait_reader

RECIPE = Path(__file__).resolve().parent / "recipe.yaml"
ABLATIONS = Path(__file__).resolve().parent.parent.parent / "train" / "configs"  # the project's ablation recipes
RUNS = ("full", "no_stea", "no_dip", "no_ecac")
ROWS = ("untrained", *RUNS)
LABELS = {"untrained": "untrained (base, STEA zero)", "full": "full (STEA + DIP + ECAC)", "no_stea": "w/o STEA (text only)",
          "no_dip": "w/o DIP", "no_ecac": "w/o ECAC"}  # fmt: skip
PROG = "python -m experiments.drawn_people"
GRID_COLUMNS = {"full": "full", "no_stea": "w/o STEA", "no_ecac": "w/o ECAC"}


@dataclass(frozen=True)
class Scale:
    people: DrawnPeopleConfig
    autoencoder: Schedule
    recognizer: Schedule
    measurer: Schedule
    base_steps: int
    run_steps: int
    evaluation: EvalSettings


FULL = Scale(
    people=DrawnPeopleConfig(size=32, train_people=200, heldout_people=10, frames_per_person=8),
    autoencoder=Schedule(1200, 3e-3),
    recognizer=Schedule(400, 3e-3),
    measurer=Schedule(1500, 3e-3),
    base_steps=1500,
    run_steps=1800,
    evaluation=EvalSettings(images_per_prompt=4, steps=50),
)
QUICK = Scale(
    people=DrawnPeopleConfig(size=16, train_people=150, heldout_people=10, frames_per_person=6),
    autoencoder=Schedule(400, 3e-3),
    recognizer=Schedule(200, 3e-3),
    measurer=Schedule(500, 3e-3),
    base_steps=300,
    run_steps=420,
    evaluation=EvalSettings(images_per_prompt=4, steps=12),
)


def run_overrides(name: str) -> dict:
    """What each run changes in the recipe: the project's ablation recipes, and text-only for w/o STEA."""
    if name == "full":
        return {}
    if name == "no_stea":
        return {"text_only_fraction": 1.0}  # no sample ever gets a face feature: the UNet learns from text alone
    ablation = yaml.safe_load((ABLATIONS / f"ablation_{name}.yaml").read_text())
    return {key: value for key, value in ablation.items() if key != "base"}


class Experiment:
    """The stages, each reading what the earlier ones left in `out`; picklable, so stages run in workers."""

    def __init__(self, out: Path, scale: Scale):
        self.out, self.scale = out, scale
        self.train_set, self.heldout_set = out / "data" / "train", out / "data" / "heldout"
        self.standins, self.base = out / "standins", out / "base"

    def recipe(self, base: Path, steps: int, **overrides) -> TrainConfig:
        return TrainConfig.load(RECIPE, base=str(base), max_steps=steps, resolution=self.scale.people.size, **overrides)

    @functools.cached_property
    def training_frames(self) -> dict[str, torch.Tensor]:
        return frames(self.train_set)

    # ------------------------------------------------------------------ stages
    def drawn_people(self) -> None:
        write_drawn_people(self.out / "data", self.scale.people)

    def components(self) -> dict:
        """The `drawn` preset's models with random weights, sized for this scale's pictures."""
        components = build_random_components("drawn", seed=0)
        size = self.scale.people.size
        components["vae"].register_to_config(sample_size=size)
        components["unet"].register_to_config(sample_size=size // 2 ** (len(components["vae"].config.block_out_channels) - 1))
        return components

    def autoencoder(self) -> str:
        folder = self.standins / "vae"
        if not (folder / "config.json").is_file():
            data = self.training_frames
            vae = self.components()["vae"]
            error = train_autoencoder(vae, data["frames"], data["masks"], self.scale.autoencoder)
            with atomic_path(folder) as partial:
                vae.save_pretrained(partial)
            return f"autoencoder: reconstruction MSE {error:.4f}"
        return "autoencoder: done before"

    def recognizer(self) -> str:
        folder = self.standins / "identity_encoder"
        if not (folder / "config.json").is_file():
            data = self.training_frames
            encoder = self.components()["identity_encoder"]
            crops = torch.cat([data["crops"], align_faces((data["frames"] + 1) / 2, data["landmarks"])])
            accuracy = train_recognizer(encoder, crops, torch.cat([data["person"], data["person"]]), self.scale.recognizer)
            with atomic_path(folder) as partial:
                encoder.save_pretrained(partial)
            return f"φ: accuracy on training people {accuracy:.3f}"
        return "φ: done before"

    def assemble_standins(self) -> None:
        """The pipeline of stand-ins: trained VAE and φ, the other parts random (text encoder) or untrained."""
        if (self.standins / "model_index.json").is_file():
            return
        components = self.components()
        components["vae"] = AutoencoderKL.from_pretrained(self.standins / "vae")
        components["identity_encoder"] = IdentityEncoder.from_pretrained(self.standins / "identity_encoder")
        PortraitBoothPipeline(**components).save_pretrained(self.standins)

    def measurer(self) -> str:
        weights = self.out / "measurer.safetensors"
        if weights.is_file():
            return "measurer: done before"
        data = self.training_frames
        vae = AutoencoderKL.from_pretrained(self.standins / "vae")
        with torch.no_grad():
            decoded = torch.cat([vae.decode(vae.encode(chunk).latent_dist.mode()).sample for chunk in data["frames"].split(256)])
        reader = TraitReader(TRAITS, len(EXPRESSIONS))
        accuracy = train_trait_reader(reader, [data["frames"], decoded.clamp(-1, 1)], data["traits"], data["expression"], self.scale.measurer)
        with atomic_path(weights) as partial:
            save_file(reader.state_dict(), partial)
        return f"measurer: accuracy on training frames {accuracy:.3f}"

    def load_measurer(self) -> TraitReader:
        reader = TraitReader(TRAITS, len(EXPRESSIONS))
        reader.load_state_dict(load_file(self.out / "measurer.safetensors"))
        return reader.eval()

    def pretrain_base(self) -> str:
        """The UNet taught text-to-image on training people (no face), saved with the stand-ins as the runs' base."""
        if (self.base / "model_index.json").is_file():
            return "base: done before"
        config = self.recipe(self.standins, self.scale.base_steps, text_only_fraction=1.0, identity_weight=0.0, localization_weight=0.0)
        final = train(config, self.train_set, self.out / "runs" / "base", resume="latest")
        pipe = PortraitBoothPipeline.from_pretrained(self.standins, unet=UNet2DConditionModel.from_pretrained(final / "unet"))
        with atomic_path(self.base) as partial:
            pipe.save_pretrained(partial)
        return f"base: {self.scale.base_steps} text-only steps"

    def train_run(self, name: str) -> str:
        final = self.out / "runs" / name / "final"
        if (final / "stea").is_dir():
            return f"{name}: done before"
        config = self.recipe(self.base, self.scale.run_steps, **run_overrides(name))
        train(config, self.train_set, self.out / "runs" / name, resume="latest")
        return f"{name}: {self.scale.run_steps} steps"

    def evaluate(self, name: str, reader: TraitReader, people: list) -> tuple[dict, dict]:
        """(measures of one row, its example images), kept in DIR/eval/<name>.json and .npz."""
        measures, pictures = self.out / "eval" / f"{name}.json", self.out / "eval" / f"{name}.npz"
        if not (measures.is_file() and pictures.is_file()):
            weights = None if name == "untrained" else self.out / "runs" / name / "final"
            bare = dict(safety_checker=False, watermark=False, device="cpu", dtype="fp32")  # what training's validation sees
            pipe = load_pipeline(ModelSource(base=str(self.base), portrait_weights=weights, **bare))
            pipe.set_progress_bar_config(disable=True)
            settings = self.scale.evaluation
            judgement = generate_and_judge(pipe, people, reader, EXPRESSIONS, settings)
            row = summarize(judgement, len(people), settings)
            config = self.recipe(self.base, 0, unconditional_fraction=0.0, text_only_fraction=0.0, flip_probability=0.0)
            dataset = PortraitDataset(self.heldout_set, pipe.tokenizer, config)
            attention = attention_in_mask(pipe, dataset, config.ecac_layers, settings)
            row.update(
                attn_id_in_mask=attention["identity"],
                attn_expr_in_mask=attention["expression"],
                attn_in_mask=round((attention["identity"] + attention["expression"]) / 2, 4),
                mask_area=attention["mask_area"],
            )
            with atomic_path(pictures) as partial, open(partial, "wb") as handle:
                np.savez(handle, **{f"{person}|{expression}": image for (person, expression), image in judgement.examples.items()})
            write_text(measures, json.dumps(row, indent=1))
        stored = np.load(pictures)
        return json.loads(measures.read_text()), {tuple(key.split("|")): stored[key] for key in stored.files}


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

    def __init__(self, experiment: Experiment, workers: int):
        self.experiment, self.workers = experiment, workers
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

    def here(self, method: str, *args) -> None:
        self._record(method, args, _stage(self.experiment, method, args))

    def side_by_side(self, stages: list[tuple[str, tuple]]) -> None:
        """Independent stages, taken up by free workers in the order given."""
        if self.pool is None:
            for method, args in stages:
                self.here(method, *args)
            return
        futures = [self.pool.submit(_stage, self.experiment, method, args) for method, args in stages]
        for (method, args), future in zip(stages, futures):
            self._record(method, args, future.result())

    def _record(self, method: str, args: tuple, outcome: tuple[str | None, float]) -> None:
        message, elapsed = outcome
        if message:
            logging.info("%s (%.0f s)", message, elapsed)
        self.seconds["_".join((method, *map(str, args)))] = elapsed


# ------------------------------------------------------------------ reporting
def markdown_table(rows: dict[str, dict], people: int) -> str:
    def cell(row: dict, name: str) -> str:
        low, high = row[f"{name}_ci"]
        return f"{row[name]:.2f} [{low:.2f}, {high:.2f}]"

    mask_area = rows["full"]["mask_area"]
    lines = [
        "| run | identification | identity similarity | expression accuracy | expression leak "
        "| identity-token attention in face | expression-token attention in face |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {LABELS[name]} | {cell(row, 'id_acc')} | {cell(row, 'id_sim')} | {cell(row, 'expr_acc')} | "
            f"{cell(row, 'expr_leak')} | {row['attn_id_in_mask']:.2f} | {row['attn_expr_in_mask']:.2f} |"
        )
    lines.append(
        f"| *chance* | {1 / people:.2f} (1 of {people}); {2 / people:.2f} knowing the word | – | {1 / len(EXPRESSIONS):.2f} | – "
        f"| {mask_area:.2f} (the face's share of the picture) | {mask_area:.2f} |"
    )
    return "\n".join(lines) + "\n"


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


def run(out: Path, scale: Scale, workers: int) -> dict:
    """Every stage, then the measures of every row; returns results.json's content.

    Order: data, the two stand-ins and the base here with every thread (each needs the one before,
    or is too short to share); then the four runs and the measurer side by side.
    """
    started = time.perf_counter()
    experiment = Experiment(out, scale)
    with Stages(experiment, workers) as stages:
        stages.here("drawn_people")
        stages.here("autoencoder")
        stages.here("recognizer")
        experiment.assemble_standins()
        stages.here("pretrain_base")
        stages.side_by_side([*(("train_run", (name,)) for name in RUNS), ("measurer", ())])
    seconds = stages.seconds
    reader, people = experiment.load_measurer(), heldout_people(experiment.heldout_set)
    rows, examples = {}, {}
    for name in ROWS:
        begun = time.perf_counter()
        rows[name], examples[name] = experiment.evaluate(name, reader, people)
        seconds[f"evaluate_{name}"] = round(time.perf_counter() - begun, 1)
    held = frames(experiment.heldout_set)
    results = {
        "chance": 1 / len(people),
        **rows,
        "chance_knowing_the_word": 2 / len(people),
        "expression_chance": 1 / len(EXPRESSIONS),
        "measurer_accuracy_heldout": round(reading_accuracy(reader, held["frames"], held["traits"], held["expression"]), 4),
        "settings": {**json.loads(json.dumps(dataclasses.asdict(scale))), "workers": workers},
        "seconds": {**seconds, "total": round(time.perf_counter() - started, 1)},
    }
    write_text(out / "results.json", json.dumps(results, indent=1))
    write_text(out / "table.md", markdown_table(rows, len(people)))
    with atomic_path(out / "grid.png") as partial:
        picture_grid(people, examples).save(partial, format="PNG")
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16×16 pictures, fewer people and steps (about 2 minutes)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the measures")
    parser.add_argument("--out", type=Path, help="where every stage keeps its result (default out/learning[-quick])")
    parser.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1), help="stages trained side by side")
    args = parser.parse_args(argv)
    _quiet()
    out = args.out or Path("out") / ("learning-quick" if args.quick else "learning")
    results = run(out, QUICK if args.quick else FULL, max(1, args.workers))
    print((out / "table.md").read_text())
    print(
        f"chance {results['chance']:.2f}; measurer on held-out frames {results['measurer_accuracy_heldout']:.3f}; "
        f"{results['seconds']['total']:.0f} s; table.md, results.json and grid.png in {out}"
    )
    if args.json:
        print(json.dumps({key: results[key] for key in ("chance", *ROWS)}))
    return results

