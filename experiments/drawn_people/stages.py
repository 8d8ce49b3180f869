"""The stages of one split seed, each reading what the earlier ones left in its folder: drawn people,
stand-ins, the measurer, the base, the runs (the recipe and what each run changes) and the evaluations.
runner.py runs them for every seed; demo_model.py runs those of the demo's model."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file, save_file

from portrait.engine import ModelSource, load_pipeline
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
    summarize_pairs,
    summarize_single,
)
from .measurer import TraitReader, reading_accuracy, train_trait_reader
from .standins import Schedule, train_autoencoder, train_recognizer
from .world import EXPRESSIONS, TRAITS, DrawnPeopleConfig, write_drawn_people

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RECIPE = HERE / "recipe.yaml"
ABLATIONS = REPO / "train" / "configs"  # the project's ablation recipes
CLIP_STAND_IN = "clip_tiny"  # the paper's w/o STEA fuses CLIP ViT-L/14; at this scale its tiny architecture
RUNS = ("full", "no_face", "no_stea", "no_dip", "no_ecac")
ROWS = ("untrained", *RUNS)


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
    runs: tuple[str, ...] = RUNS  # the runs trained from the base (the quick scale: full and no_face only)

    def __post_init__(self) -> None:
        if "full" not in self.runs or not set(self.runs) <= set(RUNS):
            raise ValueError(f"runs {self.runs}: `full` and only these are known: {RUNS}")

    @property
    def rows(self) -> tuple[str, ...]:
        """Every row judged: the untrained base, then the runs."""
        return ("untrained", *self.runs)


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
        return TrainConfig.load(
            RECIPE, base=str(base), max_steps=steps, resolution=self.people.size, seed=self.seed, **overrides
        )

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
        components["unet"].register_to_config(
            sample_size=size // 2 ** (len(components["vae"].config.block_out_channels) - 1)
        )
        components["scheduler"] = EulerDiscreteScheduler.from_config(components["scheduler"].config)
        return components

    def autoencoder(self) -> str:
        folder = self.standins / "vae"
        if (folder / "config.json").is_file():
            return ""
        data = self.training_frames
        vae = self.components()["vae"]
        error = train_autoencoder(
            vae, data["frames"], data["masks"], dataclasses.replace(self.scale.autoencoder, seed=self.seed)
        )
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
            decoded = torch.cat(
                [vae.decode(vae.encode(chunk).latent_dist.mode()).sample for chunk in data["frames"].split(256)]
            )
        reader = TraitReader(TRAITS, len(EXPRESSIONS))
        schedule = dataclasses.replace(self.scale.measurer, seed=self.seed)
        accuracy = train_trait_reader(
            reader, [data["frames"], decoded.clamp(-1, 1)], data["traits"], data["expression"], schedule
        )
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
        config = self.recipe(
            self.standins, self.scale.base_steps, text_only_fraction=1.0, identity_weight=0.0, localization_weight=0.0
        )
        final = train(config, self.train_set, self.out / "runs" / "base", resume="latest")
        pipe = PortraitBoothPipeline.from_pretrained(
            self.standins, unet=UNet2DConditionModel.from_pretrained(final / "unet")
        )
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
        bare = dict(
            safety_checker=False, watermark=False, device="cpu", dtype="fp32"
        )  # what training's validation sees
        pipe = load_pipeline(
            ModelSource(base=str(self.base), portrait_weights=weights, untrained_stea=name == "untrained", **bare)
        )
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
        attention = attention_in_mask(
            pipe, PortraitDataset(self.data / group, pipe.tokenizer, config), config.ecac_layers, settings
        )
        row.update(
            attn_id_in_mask=attention["identity"],
            attn_expr_in_mask=attention["expression"],
            mask_area=attention["mask_area"],
        )
        with atomic_path(pictures) as partial, open(partial, "wb") as handle:
            np.savez(
                handle,
                **{f"{person}|{expression}": image for (person, expression), image in judgement.examples.items()},
            )
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
            "measurer_accuracy_test_frames": round(
                reading_accuracy(reader, held["frames"], held["traits"], held["expression"]), 4
            ),
            "groups": {
                group: {name: read(self.out / "eval" / group / f"{name}.json") for name in self.scale.rows}
                for group in groups
            },
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
