"""Held-out evaluation of the learning experiment: a new person's face, and the prompt's expression.

Every person of a held-out group (never seen by any training step) gives the pipeline one reference:
the aligned crop of a frame showing expression r, where r is balanced over the group (person n shows
EXPRESSIONS[n mod 4]). The pipeline is asked for *every* expression e, the same number of images each,
with seeds that depend only on (person, expression, image), so every run is judged on the same
requests. The measurer (measurer.py) then reads each image:

- identification: the nearest of the group's K people, by the trait vector of their reference frame;
- identity similarity: cosine of the image's trait vector and its own person's;
- expression accuracy: the read expression is e; expression leak (asks with e ≠ r only): it reads r.

Chance levels are computed from the group and the asks (`chance_levels`): 1/K for identification;
the word-only ceiling, what a model that gets man/woman right from the word and nothing else reaches
(1 / the number of the group's people with that word); and for expression the best constant answer,
1/4 here because every expression is asked equally often.

Images of one person are not independent trials: every statistic is over people (per-person means,
paired sign-flip permutation tests between runs judged on the same people) and over split seeds
(`seed_interval`). Two people in one picture are judged per half (`judge_pairs`).

The cross-attention of the identity and expression tokens is measured apart from generation, on
the held-out target frames noised at fixed timesteps: the share of each token's attention that
falls inside the face mask (what ECAC asks for; uniform attention gives the mask's area).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from PIL import Image
from scipy import stats

from portrait.defaults import PAPER_GUIDANCE, PAPER_STEPS
from portrait.images import image_to_tensor
from portrait.multi import Person, PortraitBoothPeoplePipeline
from portrait.pipeline import FaceEncoding, PortraitBoothPipeline
from portrait.prompts import build_subject_prompts
from portrait.runtime import seeded_generators
from train.attention import install_attention_capture, remove_attention_capture
from train.data_format import read_manifest
from train.dataset import Draw, PortraitDataset, collate

from .measurer import TraitReader
from .world import EXPRESSIONS, reference_expression_of

PAIR_MODES = ("regions", "one-pass")


@dataclass(frozen=True)
class EvalSettings:
    images_per_prompt: int = 3
    steps: int = PAPER_STEPS
    guidance: float = PAPER_GUIDANCE
    seed: int = 0
    attention_timesteps: tuple[int, ...] = (100, 300, 500, 700, 900)
    pair_images: int = 2  # pictures per (pair of people, left/right order, mode)
    permutations: int = 20000  # sign-flip draws when there are too many people to enumerate every sign


@dataclass
class HeldOutPerson:
    index: int
    word: str
    crop: torch.Tensor  # (3, 112, 112) in [0, 1]: what φ sees
    frame: torch.Tensor  # (3, H, W) in [-1, 1]: the whole reference frame, what the measurer compares with
    expression: str  # the reference's expression

    def face(self, pipe: PortraitBoothPipeline) -> FaceEncoding:
        identity = pipe.fusion_encoder(self.crop[None].to(pipe.device, pipe.fusion_encoder.dtype))
        return FaceEncoding(identity.features, identity.embedding)


@dataclass
class Judgement:
    """Per image: who the measurer says it is, how alike, and which expression it reads."""

    person: np.ndarray  # (N,) true person
    asked: np.ndarray  # (N,) expression index asked for
    reference_expression: np.ndarray  # (N,)
    identified: np.ndarray  # (N,) nearest held-out person
    similarity: np.ndarray  # (N,) cosine to the true person's reference frame
    read_expression: np.ndarray  # (N,)
    seconds: float = 0.0  # spent generating
    examples: dict[tuple[int, str], np.ndarray] = field(
        default_factory=dict
    )  # (person, asked) → first image, HWC uint8


def heldout_people(root: Path) -> list[HeldOutPerson]:
    """One reference per held-out person: a reference crop showing `reference_expression_of(person)`."""
    people: dict[int, HeldOutPerson] = {}
    for sample in read_manifest(root):
        number = sample.meta["person"]
        if number not in people and sample.meta["reference_expression"] == reference_expression_of(number):
            crop = image_to_tensor(Image.open(root / sample.reference).convert("RGB"))
            frame = image_to_tensor(Image.open(root / sample.meta["reference_frame"]).convert("RGB")) * 2 - 1
            people[number] = HeldOutPerson(
                number, sample.identity_word, crop, frame, sample.meta["reference_expression"]
            )
    return [people[number] for number in sorted(people)]


def request_seed(seed: int, *request: int) -> int:
    return int(np.random.SeedSequence((seed, *request)).generate_state(1)[0])


def _read(reader: TraitReader, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return reader.read(torch.from_numpy(images).permute(0, 3, 1, 2).float() * 2 - 1)


@torch.no_grad()
def generate_and_judge(
    pipe: PortraitBoothPipeline, people: list[HeldOutPerson], reader: TraitReader, settings: EvalSettings
) -> Judgement:
    """Every person × every expression × `images_per_prompt` images, read by `reader`."""
    gallery, _ = reader.read(torch.stack([person.frame for person in people]))
    columns: dict[str, list] = {
        name: [] for name in ("person", "asked", "reference_expression", "identified", "similarity", "read_expression")
    }
    examples, seconds = {}, 0.0
    for person in people:
        face = person.face(pipe)
        for asked, expression in enumerate(EXPRESSIONS):
            seeds = [request_seed(settings.seed, person.index, asked, i) for i in range(settings.images_per_prompt)]
            started = time.perf_counter()
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
            seconds += time.perf_counter() - started
            traits, read = _read(reader, images)
            similarity = traits @ gallery.T  # (n, K)
            columns["person"] += [person.index] * len(seeds)
            columns["asked"] += [asked] * len(seeds)
            columns["reference_expression"] += [EXPRESSIONS.index(person.expression)] * len(seeds)
            columns["identified"] += similarity.argmax(dim=1).tolist()
            columns["similarity"] += similarity[:, person.index].tolist()
            columns["read_expression"] += read.argmax(dim=1).tolist()
            examples[(person.index, expression)] = (images[0] * 255).round().astype(np.uint8)
    return Judgement(
        **{name: np.asarray(values) for name, values in columns.items()}, seconds=seconds, examples=examples
    )


def per_person(values: np.ndarray, person: np.ndarray, where: np.ndarray | None = None) -> list[float]:
    """The mean of `values` per person (in order of person index), over the images `where` selects."""
    where = np.ones(len(values), dtype=bool) if where is None else where
    return [float(values[where & (person == name)].mean()) for name in np.unique(person)]


def summarize_single(judgement: Judgement) -> dict:
    """Per-person means of every measure (the unit every statistic uses) and their means over people."""
    j = judgement
    leak_asks = j.asked != j.reference_expression  # asking for the reference's own expression cannot leak
    people = {
        "id_acc": per_person((j.identified == j.person).astype(float), j.person),
        "id_sim": per_person(j.similarity.astype(float), j.person),
        "expr_acc": per_person((j.read_expression == j.asked).astype(float), j.person),
        "expr_leak": per_person((j.read_expression == j.reference_expression).astype(float), j.person, leak_asks),
    }
    summary: dict = {"images": int(len(j.person)), "seconds_per_image": round(j.seconds / max(1, len(j.person)), 4)}
    summary.update({name: round(float(np.mean(values)), 4) for name, values in people.items()})
    summary["per_person"] = {name: [round(v, 4) for v in values] for name, values in people.items()}
    return summary


def chance_levels(people: list[HeldOutPerson], judgement: Judgement) -> dict:
    """Chance computed from the group and the asks: 1/K, the word-only ceiling, the best constant expression."""
    words = [person.word for person in people]
    ceiling = [1 / words.count(word) for word in words]  # knowing the word leaves the people who share it
    asked = np.bincount(judgement.asked, minlength=len(EXPRESSIONS)) / len(judgement.asked)
    return {
        "identification": round(1 / len(people), 4),
        "word_only_ceiling": round(float(np.mean(ceiling)), 4),
        "word_only_ceiling_per_person": [round(c, 4) for c in ceiling],
        "expression_best_constant": round(float(asked.max()), 4),
    }


# ------------------------------------------------------------------ statistics over people and seeds
def sign_flip_p(differences: np.ndarray, draws: int = 20000, seed: int = 0) -> float:
    """One-sided paired permutation test over people: P(mean ≥ observed) when each person's difference
    is as likely negated (no effect). Every sign pattern is enumerated up to 16 people; beyond, `draws`
    random patterns (the observed one counted, so p is never 0)."""
    d = np.asarray(differences, dtype=float)
    observed = d.mean()
    if len(d) <= 16:
        signs = np.array(list(itertools.product((1, -1), repeat=len(d))))
        return float(np.mean(signs @ d / len(d) >= observed - 1e-12))
    signs = np.random.default_rng(seed).choice((1, -1), size=(draws, len(d)))
    return float((1 + np.sum(signs @ d / len(d) >= observed - 1e-12)) / (draws + 1))


def seed_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95 % t interval of a mean over split seeds (each seed one value)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


# ------------------------------------------------------------------ two people in one picture
@dataclass
class PairJudgement:
    """Per half of a two-people picture: who stands there, who the measurer says it is, the expression."""

    person: np.ndarray  # (N,) who was asked for in this half
    partner: np.ndarray  # (N,) the other person of the picture
    asked: np.ndarray  # (N,)
    identified: np.ndarray  # (N,)
    read_expression: np.ndarray  # (N,)
    seconds: float  # generating the two-people pictures
    pictures: int
    one_person_seconds: float  # the same requests for one person alone, timed in the same run
    one_person_pictures: int
    example: np.ndarray | None = None  # the first picture, HWC uint8


def pairs_of(people: list[HeldOutPerson]) -> list[tuple[HeldOutPerson, HeldOutPerson]]:
    """A man and a woman per pair, in both left/right orders: the prompt's words then tell the halves apart."""
    men = [p for p in people if p.word == "man"]
    women = [p for p in people if p.word == "woman"]
    pairs = list(zip(men, women))
    return [pair for man, woman in pairs for pair in ((man, woman), (woman, man))]


@torch.no_grad()
def judge_pairs(
    pipe: PortraitBoothPipeline, people: list[HeldOutPerson], reader: TraitReader, mode: str, settings: EvalSettings
) -> PairJudgement:
    """Two held-out people in one picture twice as wide, each asked for their own expression; each half read.

    mode "regions": MultiDiffusion region fusion (portrait/multi.py, the paper's way): a scene branch and
    one branch per person at every step. "one-pass": one UNet pass whose prompt holds both identity words,
    each augmented with its own face. Beside them, each left-hand request is also made for that person
    alone (one picture of the usual size) and timed, for the cost ratio.
    """
    if mode not in PAIR_MODES:
        raise ValueError(f"mode must be one of {PAIR_MODES}, got {mode!r}")
    gallery, _ = reader.read(torch.stack([person.frame for person in people]))
    size = people[0].frame.shape[-1]
    columns: dict[str, list] = {name: [] for name in ("person", "partner", "asked", "identified", "read_expression")}
    seconds = alone = 0.0
    example = None
    sampling = dict(num_inference_steps=settings.steps, guidance_scale=settings.guidance, output_type="np")
    for number, (left, right) in enumerate(pairs_of(people)):
        asked = [EXPRESSIONS[number % len(EXPRESSIONS)], EXPRESSIONS[(number + 1) % len(EXPRESSIONS)]]
        seeds = [request_seed(settings.seed, 1000 + number, i) for i in range(settings.pair_images)]
        prompt = f"a photo of a {left.word} and a {right.word}"
        faces = [left.face(pipe), right.face(pipe)]
        started = time.perf_counter()
        if mode == "regions":
            people_pipe = pipe.with_modules(PortraitBoothPeoplePipeline)
            pictures = people_pipe(
                prompt,
                [Person(face, person.word, expression) for face, person, expression in zip(faces, (left, right), asked)],
                height=size, width=2 * size, num_images_per_prompt=len(seeds), generator=seeded_generators(seeds), **sampling,
            ).images  # fmt: skip
        else:
            pictures = one_pass(pipe, prompt, faces, [left.word, right.word], asked, size, seeds, sampling)
        seconds += time.perf_counter() - started
        started = time.perf_counter()
        pipe(f"a photo of a {left.word}", face=faces[0], expression=asked[0], num_images_per_prompt=len(seeds),
             generator=seeded_generators(seeds), **sampling)  # fmt: skip
        alone += time.perf_counter() - started
        example = example if example is not None else (pictures[0] * 255).round().astype(np.uint8)
        for side, (person, partner, expression) in enumerate(((left, right, asked[0]), (right, left, asked[1]))):
            traits, read = _read(reader, np.ascontiguousarray(pictures[:, :, side * size : (side + 1) * size]))
            columns["person"] += [person.index] * len(seeds)
            columns["partner"] += [partner.index] * len(seeds)
            columns["asked"] += [EXPRESSIONS.index(expression)] * len(seeds)
            columns["identified"] += (traits @ gallery.T).argmax(dim=1).tolist()
            columns["read_expression"] += read.argmax(dim=1).tolist()
    count = len(pairs_of(people)) * settings.pair_images
    arrays = {name: np.asarray(values) for name, values in columns.items()}
    return PairJudgement(
        **arrays, seconds=seconds, pictures=count, one_person_seconds=alone, one_person_pictures=count, example=example
    )


def one_pass(pipe: PortraitBoothPipeline, prompt: str, faces: list[FaceEncoding], words: list[str], expressions: list[str],
             size: int, seeds: list[int], sampling: dict) -> np.ndarray:  # fmt: skip
    """Both people in one ordinary pass: the prompt's two identity words, each augmented by STEA with its own face."""
    config = pipe.stea.config
    prompts = build_subject_prompts(prompt, words, expressions, config.identity_words, config.emotion_words)
    text, negative = pipe.encode_prompt(
        [prompts[0].text], pipe.device, len(seeds), sampling["guidance_scale"] > 1, None
    )
    condition = text
    for identity_prompt, face in zip(prompts, faces):
        condition = pipe.add_identity(condition, [identity_prompt], face, len(seeds))
    return StableDiffusionPipeline.__call__(
        pipe, prompt_embeds=condition, negative_prompt_embeds=negative, height=size, width=2 * size,
        generator=seeded_generators(seeds), **sampling,
    ).images  # fmt: skip


def summarize_pairs(judgement: PairJudgement) -> dict:
    """Per person (each person's halves averaged): the right person, a swap (read as the partner), the expression."""
    j = judgement
    people = {
        "right_person": per_person((j.identified == j.person).astype(float), j.person),
        "swapped": per_person((j.identified == j.partner).astype(float), j.person),
        "expr_acc": per_person((j.read_expression == j.asked).astype(float), j.person),
    }
    summary: dict = {"halves": int(len(j.person)), "pictures": j.pictures}
    summary.update({name: round(float(np.mean(values)), 4) for name, values in people.items()})
    summary["cost_ratio"] = round((j.seconds / j.pictures) / (j.one_person_seconds / j.one_person_pictures), 3)
    summary["per_person"] = {name: [round(v, 4) for v in values] for name, values in people.items()}
    return summary


# ------------------------------------------------------------------ attention
@torch.no_grad()
def attention_in_mask(
    pipe: PortraitBoothPipeline, dataset: PortraitDataset, layers: tuple[str, ...], settings: EvalSettings
) -> dict:
    """Share of the identity and expression tokens' attention inside the face mask, and the mask's area.

    Every frame of `dataset` (no dropout, no flip), with its own reference's face, noised at each of
    `settings.attention_timesteps` with fixed noise; averaged over frames, layers and timesteps.
    """
    batch = collate([dataset[Draw(index, 0)] for index in range(len(dataset))])
    device, dtype = pipe.device, pipe.unet.dtype
    latents = (
        pipe.vae.encode(batch["pixel_values"].to(device, pipe.vae.dtype)).latent_dist.mode()
        * pipe.vae.config.scaling_factor
    )
    text = pipe.text_encoder(batch["input_ids"].to(device))[0]
    features = pipe.fusion_encoder(batch["reference"].to(device, pipe.fusion_encoder.dtype)).features
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
                layer_mask = torch.nn.functional.interpolate(mask.float(), size=(h, w), mode="area").flatten(
                    1
                )  # (B, HW)
                inside = (maps * layer_mask[..., None]).sum(dim=1) / maps.sum(dim=1).clamp_min(1e-12)  # (B, 2)
                shares.append(inside)
    finally:
        store.token_indices = None
        remove_attention_capture(pipe.unet)
    share = torch.stack(shares).mean(dim=(0, 1))
    return {
        "identity": round(float(share[0]), 4),
        "expression": round(float(share[1]), 4),
        "mask_area": round(float(mask.mean()), 4),
    }
