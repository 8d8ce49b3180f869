"""Drawn people: a small world of cartoon faces whose identity and expression are known exactly.

Why it exists: no real weights and no GPU are at hand, yet the claim that training *learns* (a face
carried to a person never seen, the expression taken from the prompt's word) must be checked before
anyone spends GPU days on CelebV-Text. Here a person is a vector of visible traits (sex, hair style,
skin tone, hair colour, face width), an expression is drawn by mouth, brows and eyes, and
every frame is jittered in position, scale, background and clothes. Frames are written in the
project's own training-set format (train/data_format.py), with the reference of each sample another
frame of the same person *with a different expression*, as CelebV-Text's middle frame is.

People are split (`split_people`) into training people and three held-out groups that no training step
sees: `test` (new combinations of trait values that all occur in training), `novel` (people with a skin
tone or hair colour that no training frame shows) and `validation` (for choosing settings, never the
test people). Within a group people are at least `min_heldout_distance` traits apart, so that telling
them apart is a fair task. Everything is a pure function of the seed.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from portrait.face.alignment import align_faces
from portrait.files import write_png, write_text
from portrait.images import image_to_tensor
from portrait.prompts import build_identity_prompt
from train.data_format import MANIFEST, Sample, write_sample

SEXES = ("man", "woman")
HAIR_STYLES = {"man": ("short", "bald", "tall"), "woman": ("long", "bob", "bun")}
SKIN_TONES = ((250, 222, 196), (232, 186, 146), (196, 144, 100), (146, 98, 64), (92, 60, 40))
HAIR_COLOURS = ((22, 22, 26), (104, 62, 30), (236, 206, 110), (196, 72, 28), (178, 178, 184))
IRIS = (70, 45, 25)
FACE_WIDTHS = (0.68, 0.84, 1.0)  # face width / face height
EXPRESSIONS = ("happy", "sad", "surprised", "neutral")
# Trait name → number of values; `DrawnIdentity` holds one index per trait. hair_style indexes HAIR_STYLES[sex].
TRAITS = {
    "sex": 2,
    "hair_style": 3,
    "skin": len(SKIN_TONES),
    "hair_colour": len(HAIR_COLOURS),
    "face_width": len(FACE_WIDTHS),
}
TEMPLATES = ("a photo of a {word}", "a portrait of a {word}", "a photo of a {word} with a face")
SUPERSAMPLE = 4  # drawn at 4× and reduced, for smooth edges


@dataclass(frozen=True)
class DrawnIdentity:
    """A person of the drawn world: one value index per trait (the measurer reads them back from pictures)."""

    sex: int
    hair_style: int
    skin: int
    hair_colour: int
    face_width: int

    @property
    def word(self) -> str:
        return SEXES[self.sex]

    def traits(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in TRAITS)

    def distance(self, other: "DrawnIdentity") -> int:
        """How many traits differ."""
        return sum(a != b for a, b in zip(self.traits(), other.traits()))


@dataclass(frozen=True)
class DrawnPeopleConfig:
    size: int = 64
    train_people: int = 200
    heldout_people: int = 10  # test people: new combinations of trait values that all occur in training
    novel_people: int = 10  # test people whose novel trait value never occurs in training
    validation_people: int = 10  # for choosing settings; never the test people
    frames_per_person: int = 8  # training samples per person (each with its own reference frame)
    min_heldout_distance: int = 3  # traits in which any two people of one held-out group differ
    seed: int = 0


HELDOUT_GROUPS = ("test", "novel", "validation")
NOVEL_TRAITS = ("skin", "hair_colour")  # a value of one of these is withheld from training


@dataclass(frozen=True)
class Split:
    """Who is in which set, and the trait value no training frame shows (held by the `novel` group only)."""

    train: list[DrawnIdentity]
    test: list[DrawnIdentity]
    novel: list[DrawnIdentity]
    validation: list[DrawnIdentity]
    novel_trait: tuple[str, int]  # (trait name, value index)

    def group(self, name: str) -> list[DrawnIdentity]:
        return getattr(self, name)


@dataclass
class Frame:
    image: Image.Image  # RGB, size × size
    mask: Image.Image  # L, 255 on the face (skin, brows, eyes, nose, mouth; not hair or neck)
    landmarks: np.ndarray  # (5, 2) float32 pixel centres: left eye, right eye, nose, left and right mouth corner
    expression: str


def all_people() -> list[DrawnIdentity]:
    """Every trait vector of this world."""
    return [DrawnIdentity(*values) for values in itertools.product(*(range(count) for count in TRAITS.values()))]


def split_people(config: DrawnPeopleConfig) -> Split:
    """Training people and three held-out groups, disjoint, drawn by the seed before anything else exists.

    First the seed withholds one value of skin tone or hair colour: the `novel` group has it, nobody
    else does. Then the `test` and `validation` groups are picked among the rest (half of each sex,
    each person at least `min_heldout_distance` traits from the others of the group, one fewer in the
    novel group, whose people all share the novel value); the training
    people are drawn from whoever is left.
    """
    rng = np.random.default_rng((config.seed, 0))
    trait = NOVEL_TRAITS[int(rng.integers(len(NOVEL_TRAITS)))]
    value = int(rng.integers(TRAITS[trait]))
    people = all_people()
    order = [people[index] for index in rng.permutation(len(people))]
    novel_trait = (trait, value)
    has_novel = [getattr(person, trait) == value for person in order]
    # The novel group shares its novel value, so its people are one trait fewer apart than the other groups'.
    novel = _spread_group(
        [p for p, flag in zip(order, has_novel) if flag], config.novel_people, config.min_heldout_distance - 1
    )
    familiar = [p for p, flag in zip(order, has_novel) if not flag]
    test = _spread_group(familiar, config.heldout_people, config.min_heldout_distance)
    validation = _spread_group(
        [p for p in familiar if p not in set(test)], config.validation_people, config.min_heldout_distance
    )
    taken = set(test) | set(validation)
    training = [p for p in familiar if p not in taken][: config.train_people]
    return Split(training, test, novel, validation, novel_trait)


def _spread_group(candidates: list[DrawnIdentity], count: int, distance: int) -> list[DrawnIdentity]:
    """The first `count` of `candidates` (in order) that are `distance` traits apart, half of each sex."""
    group: list[DrawnIdentity] = []
    for candidate in candidates:
        if len(group) == count:
            break
        same_sex = sum(p.sex == candidate.sex for p in group)
        if same_sex < (count + 1 - candidate.sex) // 2 and all(candidate.distance(p) >= distance for p in group):
            group.append(candidate)
    if len(group) < count:
        raise ValueError(f"Only {len(group)} of {count} held-out people are {distance} traits apart")
    return group


def draw_frame(person: DrawnIdentity, expression: str, rng: np.random.Generator, size: int = 64) -> Frame:
    """One jittered frame of `person` showing `expression`."""
    scale = size * SUPERSAMPLE
    height = rng.uniform(0.58, 0.66)  # face height, canvas fractions
    width = height * FACE_WIDTHS[person.face_width]
    cx, cy = 0.5 + rng.uniform(-0.06, 0.06), 0.53 + rng.uniform(-0.04, 0.04)
    background = _muted_colour(rng)
    clothes = _muted_colour(rng)
    image = Image.new("RGB", (scale, scale), background)
    mask = Image.new("L", (scale, scale), 0)
    paint, label = ImageDraw.Draw(image), ImageDraw.Draw(mask)

    def at(u: float, v: float) -> tuple[float, float]:
        """Face coordinates (u across, v down, ±1 at the face ellipse) → supersampled pixels."""
        return (cx + u * width / 2) * scale, (cy + v * height / 2) * scale

    def box(u0: float, v0: float, u1: float, v1: float) -> list[float]:
        return [*at(u0, v0), *at(u1, v1)]

    skin, hair = SKIN_TONES[person.skin], HAIR_COLOURS[person.hair_colour]
    style = HAIR_STYLES[person.word][person.hair_style]
    _draw_hair_behind(paint, box, at, style, hair)
    paint.ellipse(box(-0.9, 1.3, 0.9, 4.5), fill=clothes)  # shoulders
    paint.rectangle(box(-0.32, 0.6, 0.32, 1.5), fill=tuple(int(c * 0.9) for c in skin))  # neck
    paint.ellipse(box(-1, -1, 1, 1), fill=skin)
    label.ellipse(box(-1, -1, 1, 1), fill=255)
    for draw, colour in ((paint, hair), (label, 0)):
        _draw_fringe(draw, at, style, colour)
    landmarks = _draw_features(paint, box, at, expression, IRIS, hair, skin)
    image = image.resize((size, size), Image.LANCZOS)
    mask = mask.resize((size, size), Image.BOX).point(lambda value: 255 if value >= 128 else 0)
    points = np.asarray(landmarks, dtype=np.float32) / SUPERSAMPLE - 0.5  # pixel centres at integers
    return Frame(image, mask, points, expression)


def _muted_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour of low saturation: varied, yet never as loud as a face's own colours."""
    grey = rng.uniform(70, 220)
    tint = rng.normal(0, 25, 3)
    return tuple(int(v) for v in np.clip(grey + tint, 0, 255))


def _draw_hair_behind(paint: ImageDraw.ImageDraw, box, at, style: str, hair: tuple) -> None:
    if style == "long":
        paint.rounded_rectangle(box(-1.35, -1.2, 1.35, 1.6), radius=40, fill=hair)
    elif style == "bob":
        paint.ellipse(box(-1.3, -1.22, 1.3, 0.75), fill=hair)
    elif style == "bun":
        paint.ellipse(box(-0.45, -1.75, 0.45, -0.85), fill=hair)
        paint.ellipse(box(-1.08, -1.15, 1.08, 0.2), fill=hair)
    elif style == "tall":
        paint.ellipse(box(-1.1, -1.75, 1.1, 0.1), fill=hair)
    elif style == "short":
        paint.ellipse(box(-1.1, -1.1, 1.1, 0.1), fill=hair)
    else:  # bald: only the sides
        paint.ellipse(box(-1.08, -0.5, 1.08, 0.1), fill=hair)


def _draw_fringe(draw: ImageDraw.ImageDraw, at, style: str, colour) -> None:
    """The hair over the forehead: the part of the face ellipse above the style's hair line (drawn
    over the face, and cut out of the face mask)."""
    line = {"long": -0.5, "bob": -0.42, "bun": -0.68, "short": -0.55, "tall": -0.6, "bald": -1.1}[style]
    angles = np.linspace(np.pi, 2 * np.pi, 33)
    points = [at(1.02 * np.cos(a), 1.02 * np.sin(a)) for a in angles if 1.02 * np.sin(a) <= line]
    if style == "long":  # a side parting: the fringe sweeps lower on one side
        points = [at(-0.2, line), *points, at(1.0, line + 0.25), at(0.3, line)]
    if len(points) >= 3:
        draw.polygon(points, fill=colour)


def _draw_features(paint: ImageDraw.ImageDraw, box, at, expression: str, eye: tuple, hair: tuple, skin: tuple) -> list:
    """Eyes, brows, nose and mouth for `expression`; returns the five landmarks (supersampled pixels)."""
    eye_open = 0.2 if expression == "surprised" else 0.13
    landmarks = []
    for side in (-1, 1):
        u = 0.38 * side
        paint.ellipse(box(u - 0.2, -0.12 - eye_open, u + 0.2, -0.12 + eye_open), fill=(250, 250, 250))
        paint.ellipse(box(u - 0.11, -0.23, u + 0.11, -0.01), fill=eye)
        paint.ellipse(box(u - 0.045, -0.16, u + 0.045, -0.08), fill=(10, 10, 10))
        landmarks.append(at(u, -0.12))
        inner, outer = _brow(expression)
        paint.line([at(0.14 * side, inner), at(0.62 * side, outer)], fill=hair, width=max(2, paint.im.size[0] // 22))
    landmarks.append(at(0.0, 0.22))
    shade = tuple(int(c * 0.7) for c in skin)
    paint.polygon([at(0.0, -0.02), at(-0.1, 0.24), at(0.1, 0.24)], fill=shade)
    corners = _draw_mouth(paint, box, at, expression)
    landmarks += corners
    return landmarks


def _brow(expression: str) -> tuple[float, float]:
    """(inner end, outer end) heights of a brow: sad lifts the inner end, surprise lifts both."""
    return {"happy": (-0.44, -0.46), "sad": (-0.62, -0.3), "surprised": (-0.7, -0.64), "neutral": (-0.42, -0.42)}[
        expression
    ]


def _draw_mouth(paint: ImageDraw.ImageDraw, box, at, expression: str) -> list:
    lips = (150, 30, 40)
    width = max(2, paint.im.size[0] // 20)
    if expression == "happy":
        paint.chord(box(-0.42, 0.3, 0.42, 0.74), 0, 180, fill=lips)
        paint.chord(box(-0.34, 0.38, 0.34, 0.6), 0, 180, fill=(245, 245, 245))
        return [at(-0.42, 0.52), at(0.42, 0.52)]
    if expression == "sad":  # a dome: the corners pulled down
        paint.chord(box(-0.38, 0.46, 0.38, 0.9), 180, 360, fill=lips)
        return [at(-0.38, 0.68), at(0.38, 0.68)]
    if expression == "surprised":
        paint.ellipse(box(-0.15, 0.42, 0.15, 0.8), fill=(70, 10, 20))
        return [at(-0.15, 0.61), at(0.15, 0.61)]
    paint.line([at(-0.28, 0.58), at(0.28, 0.58)], fill=lips, width=width)
    return [at(-0.28, 0.58), at(0.28, 0.58)]


def aligned_reference(frame: Frame) -> Image.Image:
    """The frame's face on the 112×112 ArcFace template, as data preparation writes references."""
    aligned = align_faces(image_to_tensor(frame.image)[None], torch.from_numpy(frame.landmarks)[None])[0]
    return Image.fromarray((aligned.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())


SPLIT_CODES = {"train": 1, "test": 2, "novel": 3, "validation": 4}


def frame_rng(seed: int, person: DrawnIdentity, index: int, split: str) -> np.random.Generator:
    return np.random.default_rng((seed, SPLIT_CODES[split], *person.traits(), index))


def reference_expression_of(number: int) -> str:
    """The expression of a held-out person's evaluation reference: balanced over the group (person n: n mod 4)."""
    return EXPRESSIONS[number % len(EXPRESSIONS)]


def write_split(root: Path, people: list[DrawnIdentity], split: str, config: DrawnPeopleConfig) -> Path:
    """One set in the training format: per person, frames with a reference of another expression.

    Training frames draw their expressions at random. Held-out frames show each expression once (in the
    order of EXPRESSIONS), each with a reference of the person's evaluation expression
    (`reference_expression_of`), or, for the frame that shows that expression, of the next one.
    """
    folder = Path(root) / split
    held_out = split != "train"
    count = len(EXPRESSIONS) if held_out else config.frames_per_person
    for number, person in enumerate(people):
        for index in range(count):
            rng = frame_rng(config.seed, person, index, split)
            if held_out:
                expression, chosen = EXPRESSIONS[index], reference_expression_of(number)
                reference_expression = chosen if chosen != expression else EXPRESSIONS[(index + 1) % len(EXPRESSIONS)]
            else:
                expression = str(rng.choice(EXPRESSIONS))
                reference_expression = str(rng.choice([e for e in EXPRESSIONS if e != expression]))
            target = draw_frame(person, expression, rng, config.size)
            reference = draw_frame(person, reference_expression, rng, config.size)
            template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
            prompt = build_identity_prompt(template.format(word=person.word), person.word, expression=expression)
            name = f"p{number:03d}-{index:02d}"
            meta = {"person": number, "traits": list(person.traits()), "reference_expression": reference_expression,
                    "reference_frame": f"{number:03d}/{name}.ref-frame.png"}  # fmt: skip
            sample = Sample.of_prompt(
                f"{split}-{name}", f"{number:03d}/{name}", prompt, np.round(target.landmarks, 3).tolist(), meta=meta
            )
            write_png(folder / sample.meta["reference_frame"], reference.image)  # before the manifest line
            write_sample(folder, sample, target.image, target.mask, aligned_reference(reference))
    return folder


def write_drawn_people(root: str | Path, config: DrawnPeopleConfig = DrawnPeopleConfig()) -> dict[str, Path]:
    """Write ROOT/train and one set per held-out group (ROOT/test, novel, validation), and ROOT/people.json.

    Returns {set name: folder}. A finished set (people.json present, written last, for the same config) is
    left as it is.
    """
    root = Path(root)
    record = root / "people.json"
    split = split_people(config)
    names = ("train", *HELDOUT_GROUPS)
    description = {"config": asdict(config), **{name: [list(p.traits()) for p in split.group(name)] for name in names},
                   "novel_trait": list(split.novel_trait), "traits": TRAITS, "expressions": EXPRESSIONS}  # fmt: skip
    folders = {name: root / name for name in names}
    if record.is_file() and json.loads(record.read_text()) == json.loads(json.dumps(description)):
        return folders
    for name in names:
        (root / name / MANIFEST).unlink(missing_ok=True)  # an unfinished earlier write is redone whole
    for name in names:
        write_split(root, split.group(name), name, config)
    write_text(record, json.dumps(description, indent=1))
    return folders
