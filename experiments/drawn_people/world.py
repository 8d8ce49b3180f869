"""Drawn people: a small world of cartoon faces whose identity and expression are known exactly.

Why it exists: no real weights and no GPU are at hand, yet the claim that training *learns* (a face
carried to a person never seen, the expression taken from the prompt's word) must be checked before
anyone spends GPU days on CelebV-Text. Here a person is a vector of visible traits (sex, hair style,
skin tone, hair colour, face width), an expression is drawn by mouth, brows and eyes, and
every frame is jittered in position, scale, background and clothes. Frames are written in the
project's own training-set format (train/data_format.py), with the reference of each sample another
frame of the same person *with a different expression*, as CelebV-Text's middle frame is.

People are split into training people and held-out people; held-out people are distinct trait
vectors never drawn in the training split, at least `min_heldout_distance` traits apart from each
other so that telling them apart is a fair task. Everything is a pure function of the seed.
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
from portrait.face.analyzer import image_to_tensor
from portrait.files import write_text
from portrait.prompts import build_identity_prompt

from train.data_format import MANIFEST, Sample, save_image_atomically, write_sample

SEXES = ("man", "woman")
HAIR_STYLES = {"man": ("short", "bald", "tall"), "woman": ("long", "bob", "bun")}
SKIN_TONES = ((250, 222, 196), (232, 186, 146), (196, 144, 100), (146, 98, 64), (92, 60, 40))
HAIR_COLOURS = ((22, 22, 26), (104, 62, 30), (236, 206, 110), (196, 72, 28), (178, 178, 184))
IRIS = (70, 45, 25)
FACE_WIDTHS = (0.68, 0.84, 1.0)  # face width / face height
EXPRESSIONS = ("happy", "sad", "surprised", "neutral")
# Trait name → number of values; `Person` holds one index per trait. hair_style indexes HAIR_STYLES[sex].
TRAITS = {"sex": 2, "hair_style": 3, "skin": len(SKIN_TONES), "hair_colour": len(HAIR_COLOURS), "face_width": len(FACE_WIDTHS)}
TEMPLATES = ("a photo of a {word}", "a portrait of a {word}", "a photo of a {word} with a face")
SUPERSAMPLE = 4  # drawn at 4× and reduced, for smooth edges


@dataclass(frozen=True)
class Person:
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

    def distance(self, other: "Person") -> int:
        """How many traits differ."""
        return sum(a != b for a, b in zip(self.traits(), other.traits()))


@dataclass(frozen=True)
class DrawnPeopleConfig:
    size: int = 64
    train_people: int = 200
    heldout_people: int = 10
    frames_per_person: int = 8  # training samples per person (each with its own reference frame)
    heldout_frames: int = 4  # held-out frames per person, one per expression (attention measure, measurer check)
    min_heldout_distance: int = 3  # traits in which any two held-out people differ
    seed: int = 0


@dataclass
class Frame:
    image: Image.Image  # RGB, size × size
    mask: Image.Image  # L, 255 on the face (skin, brows, eyes, nose, mouth; not hair or neck)
    landmarks: np.ndarray  # (5, 2) float32 pixel centres: left eye, right eye, nose, left and right mouth corner
    expression: str


def all_people() -> list[Person]:
    """Every trait vector of this world."""
    return [Person(*values) for values in itertools.product(*(range(count) for count in TRAITS.values()))]


def split_people(config: DrawnPeopleConfig) -> tuple[list[Person], list[Person]]:
    """(training people, held-out people): disjoint sets of trait vectors, drawn by the seed.

    Held-out people are picked first, half of each sex, each at least `min_heldout_distance` traits
    from those already picked; the training people are drawn from everyone else.
    """
    rng = np.random.default_rng((config.seed, 0))
    people = all_people()
    order = rng.permutation(len(people))
    heldout: list[Person] = []
    for index in order:
        candidate = people[index]
        same_sex = sum(p.sex == candidate.sex for p in heldout)
        if same_sex >= (config.heldout_people + 1 - candidate.sex) // 2:
            continue
        if all(candidate.distance(p) >= config.min_heldout_distance for p in heldout):
            heldout.append(candidate)
        if len(heldout) == config.heldout_people:
            break
    if len(heldout) < config.heldout_people:
        raise ValueError(f"Only {len(heldout)} held-out people are {config.min_heldout_distance} traits apart")
    taken = set(heldout)
    training = [people[index] for index in order if people[index] not in taken][: config.train_people]
    return training, heldout


def draw_frame(person: Person, expression: str, rng: np.random.Generator, size: int = 64) -> Frame:
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
    return {"happy": (-0.44, -0.46), "sad": (-0.62, -0.3), "surprised": (-0.7, -0.64), "neutral": (-0.42, -0.42)}[expression]


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


def frame_rng(seed: int, person: Person, index: int, split: str) -> np.random.Generator:
    return np.random.default_rng((seed, {"train": 1, "heldout": 2}[split], *person.traits(), index))


def write_split(root: Path, people: list[Person], split: str, config: DrawnPeopleConfig) -> Path:
    """One set in the training format: per person, frames with a reference of another expression.

    Training frames draw their expressions at random; held-out frames show each expression once
    (in the order of EXPRESSIONS), so an evaluation can ask every person for every expression.
    """
    folder = Path(root) / split
    count = config.frames_per_person if split == "train" else config.heldout_frames
    for number, person in enumerate(people):
        for index in range(count):
            rng = frame_rng(config.seed, person, index, split)
            expression = EXPRESSIONS[index % len(EXPRESSIONS)] if split == "heldout" else str(rng.choice(EXPRESSIONS))
            reference_expression = str(rng.choice([e for e in EXPRESSIONS if e != expression]))
            target = draw_frame(person, expression, rng, config.size)
            reference = draw_frame(person, reference_expression, rng, config.size)
            template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
            prompt = build_identity_prompt(template.format(word=person.word), person.word, expression=expression)
            name = f"p{number:03d}-{index:02d}"
            sample = Sample(
                id=f"{split}-{name}",
                image=f"{number:03d}/{name}.png",
                mask=f"{number:03d}/{name}.mask.png",
                reference=f"{number:03d}/{name}.ref.png",
                caption=prompt.text,
                identity_word=person.word,
                identity_span=prompt.identity_span,
                landmarks=np.round(target.landmarks, 3).tolist(),
                expression=expression,
                expression_span=prompt.expression_span,
                meta={"person": number, "traits": list(person.traits()), "reference_expression": reference_expression,
                      "reference_frame": f"{number:03d}/{name}.ref-frame.png"},
            )  # fmt: skip
            save_image_atomically(reference.image, folder / sample.meta["reference_frame"])  # before the manifest line
            write_sample(folder, sample, target.image, target.mask, aligned_reference(reference))
    return folder


def write_drawn_people(root: str | Path, config: DrawnPeopleConfig = DrawnPeopleConfig()) -> tuple[Path, Path]:
    """Write ROOT/train and ROOT/heldout (each a training-format set) and ROOT/people.json.

    A finished set (people.json present, written last, for the same config) is left as it is.
    """
    root = Path(root)
    record = root / "people.json"
    training, heldout = split_people(config)
    description = {"config": asdict(config), "train": [list(p.traits()) for p in training],
                   "heldout": [list(p.traits()) for p in heldout], "traits": TRAITS, "expressions": EXPRESSIONS}  # fmt: skip
    if record.is_file() and json.loads(record.read_text()) == json.loads(json.dumps(description)):
        return root / "train", root / "heldout"
    for split in ("train", "heldout"):
        (root / split / MANIFEST).unlink(missing_ok=True)  # an unfinished earlier write is redone whole
    write_split(root, training, "train", config)
    write_split(root, heldout, "heldout", config)
    write_text(record, json.dumps(description, indent=1))
    return root / "train", root / "heldout"
