"""Held-out evaluation of the learning experiment: a new person's face, and the prompt's expression.

For every held-out person (never seen by any training step) the pipeline gets one reference: the
aligned crop of a frame showing expression r. It is asked for every *other* expression e, several
images each, with seeds that depend only on (person, expression, image), so every run is judged on
the same requests. The measurer (measurer.py) then reads each image:

- identification: the nearest of the K held-out people, by the trait vector of their reference
  frame (chance 1/K);
- identity similarity: cosine of the image's trait vector and its own person's;
- expression accuracy: the read expression is e; expression leak: it is r (the reference's).

Images of one person are not independent trials, so intervals come from a bootstrap over people.
The cross-attention of the identity and expression tokens is measured apart from generation, on
the held-out target frames noised at fixed timesteps: the share of each token's attention that
falls inside the face mask (what ECAC asks for; uniform attention gives the mask's area).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image
from scipy.stats import binomtest

from portrait.face.analyzer import image_to_tensor
from portrait.pipeline import FaceEncoding, PortraitBoothPipeline
from portrait.runtime import seeded_generators

from train.attention import install_attention_capture, remove_attention_capture
from train.data_format import read_manifest
from train.dataset import Draw, PortraitDataset, collate
from .measurer import TraitReader


@dataclass(frozen=True)
class EvalSettings:
    images_per_prompt: int = 4
    steps: int = 20
    guidance: float = 5.0
    seed: int = 0
    attention_timesteps: tuple[int, ...] = (100, 300, 500, 700, 900)
    bootstrap: int = 2000


@dataclass
class HeldOutPerson:
    index: int
    word: str
    crop: torch.Tensor  # (3, 112, 112) in [0, 1]: what φ sees
    frame: torch.Tensor  # (3, H, W) in [-1, 1]: the whole reference frame, what the measurer compares with
    expression: str  # the reference's expression


@dataclass
class Judgement:
    """Per image: who the measurer says it is, how alike, and which expression it reads."""

    person: np.ndarray  # (N,) true person
    asked: np.ndarray  # (N,) expression index asked for
    reference_expression: np.ndarray  # (N,)
    identified: np.ndarray  # (N,) nearest held-out person
    similarity: np.ndarray  # (N,) cosine to the true person's reference frame
    read_expression: np.ndarray  # (N,)
    examples: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # (person, asked) → first image, HWC uint8


def heldout_people(root: Path) -> list[HeldOutPerson]:
    """One reference per held-out person: the reference of each person's first sample."""
    people = []
    for sample in read_manifest(root):
        if sample.meta["person"] == len(people):
            crop = image_to_tensor(Image.open(root / sample.reference).convert("RGB"))
            frame = image_to_tensor(Image.open(root / sample.meta["reference_frame"]).convert("RGB")) * 2 - 1
            people.append(HeldOutPerson(len(people), sample.identity_word, crop, frame, sample.meta["reference_expression"]))
    return people


def request_seed(seed: int, person: int, expression: int, image: int) -> int:
    return int(np.random.SeedSequence((seed, person, expression, image)).generate_state(1)[0])


@torch.no_grad()
def generate_and_judge(
    pipe: PortraitBoothPipeline,
    people: list[HeldOutPerson],
    reader: TraitReader,
    expressions: tuple[str, ...],
    settings: EvalSettings,
) -> Judgement:
    """Every person × every expression but their reference's × `images_per_prompt` images, read by `reader`."""
    gallery, _ = reader.read(torch.stack([person.frame for person in people]))
    columns: dict[str, list] = {name: [] for name in ("person", "asked", "reference_expression", "identified", "similarity", "read_expression")}
    examples = {}
    for person in people:
        identity = pipe.identity_encoder(person.crop[None].to(pipe.device, pipe.identity_encoder.dtype))
        face = FaceEncoding(identity.features, identity.embedding)
        for asked, expression in enumerate(expressions):
            if expression == person.expression:
                continue
            seeds = [request_seed(settings.seed, person.index, asked, i) for i in range(settings.images_per_prompt)]
            images = pipe(
                f"a photo of a {person.word}",
                face=face,
                expression=expression,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance,
                num_images_per_prompt=len(seeds),
                generator=seeded_generators(seeds),
                output_type="np",
            ).images
            traits, read = reader.read(torch.from_numpy(images).permute(0, 3, 1, 2).float() * 2 - 1)
            similarity = traits @ gallery.T  # (n, K)
            columns["person"] += [person.index] * len(seeds)
            columns["asked"] += [asked] * len(seeds)
            columns["reference_expression"] += [expressions.index(person.expression)] * len(seeds)
            columns["identified"] += similarity.argmax(dim=1).tolist()
            columns["similarity"] += similarity[:, person.index].tolist()
            columns["read_expression"] += read.argmax(dim=1).tolist()
            examples[(person.index, expression)] = (images[0] * 255).round().astype(np.uint8)
    return Judgement(**{name: np.asarray(values) for name, values in columns.items()}, examples=examples)


def bootstrap_interval(values: np.ndarray, groups: np.ndarray, resamples: int, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean of `values`, resampling whole groups (people) with replacement."""
    rng = np.random.default_rng(seed)
    names = np.unique(groups)
    by_group = [values[groups == name] for name in names]
    means = []
    for _ in range(resamples):
        chosen = rng.integers(0, len(names), len(names))
        means.append(np.concatenate([by_group[i] for i in chosen]).mean())
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def summarize(judgement: Judgement, people: int, settings: EvalSettings) -> dict:
    """Means with 95 % person-bootstrap intervals, and the identification's one-sided binomial p-values
    against chance (1/people) and against chance for someone who knows the prompt's word (2/people)."""
    j = judgement
    measures = {
        "id_acc": (j.identified == j.person).astype(float),
        "id_sim": j.similarity.astype(float),
        "expr_acc": (j.read_expression == j.asked).astype(float),
        "expr_leak": (j.read_expression == j.reference_expression).astype(float),
    }
    summary: dict = {"images": int(len(j.person))}
    for name, values in measures.items():
        summary[name] = round(float(values.mean()), 4)
        summary[f"{name}_ci"] = [round(v, 4) for v in bootstrap_interval(values, j.person, settings.bootstrap, settings.seed)]
    hits, trials = int((j.identified == j.person).sum()), len(j.person)
    summary["id_p_value"] = float(binomtest(hits, trials, 1 / people, alternative="greater").pvalue)
    # The prompt's word (man/woman) already halves the candidates: held-out people are half of each.
    summary["id_p_value_knowing_the_word"] = float(binomtest(hits, trials, min(1.0, 2 / people), alternative="greater").pvalue)
    return summary


@torch.no_grad()
def attention_in_mask(pipe: PortraitBoothPipeline, dataset: PortraitDataset, layers: tuple[str, ...], settings: EvalSettings) -> dict:
    """Share of the identity and expression tokens' attention inside the face mask, and the mask's area.

    Every frame of `dataset` (no dropout, no flip), with its own reference's face, noised at each of
    `settings.attention_timesteps` with fixed noise; averaged over frames, layers and timesteps.
    """
    batch = collate([dataset[Draw(index, 0)] for index in range(len(dataset))])
    device, dtype = pipe.device, pipe.unet.dtype
    latents = pipe.vae.encode(batch["pixel_values"].to(device, pipe.vae.dtype)).latent_dist.mode() * pipe.vae.config.scaling_factor
    text = pipe.text_encoder(batch["input_ids"].to(device))[0]
    features = pipe.identity_encoder(batch["reference"].to(device, pipe.identity_encoder.dtype)).features
    condition = pipe.stea(text.to(pipe.stea.dtype), batch["face_token"].to(device), features.to(pipe.stea.dtype))
    mask = batch["face_mask"].to(device)
    noising = DDPMScheduler.from_config(pipe.scheduler.config)  # training's forward process
    store = install_attention_capture(pipe.unet, layers)
    store.token_indices = torch.stack([batch["identity_token"], batch["expression_token"]], dim=1).to(device)
    store.latent_size = tuple(latents.shape[-2:])
    shares = []
    generator = torch.Generator().manual_seed(settings.seed)
    try:
        for timestep in settings.attention_timesteps:
            noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
            t = torch.full((len(latents),), timestep, device=device, dtype=torch.long)
            store.maps.clear()
            pipe.unet(noising.add_noise(latents, noise, t).to(dtype), t, encoder_hidden_states=condition.to(dtype))
            for maps in store.maps.values():  # (B, HW, 2)
                h, w = store.resolution(maps.shape[1])
                layer_mask = torch.nn.functional.interpolate(mask.float(), size=(h, w), mode="area").flatten(1)  # (B, HW)
                inside = (maps * layer_mask[..., None]).sum(dim=1) / maps.sum(dim=1).clamp_min(1e-12)  # (B, 2)
                shares.append(inside)
    finally:
        store.token_indices = None
        remove_attention_capture(pipe.unet)
    share = torch.stack(shares).mean(dim=(0, 1))
    return {"identity": round(float(share[0]), 4), "expression": round(float(share[1]), 4), "mask_area": round(float(mask.mean()), 4)}
