"""The offline demo: the drawn-people model that the learning experiment trained, served where no SD base is.

Without Stable Diffusion 1.5 on the machine, real selfies cannot be turned into portraits. The
experiment in experiments/drawn_people/ trains PortraitBooth's parts at toy size on cartoon people
and carries a face to people no training step has seen; its `full` model is committed in
assets/demo/ (how it was made: assets/demo/demo.json and README.md). Serving it shows the method
working on a CPU, offline, instead of noise.

A drawn person needs no face detector: the drawing knows its five landmarks, so its `FaceAnalysis`
is built from them and the engine's own alignment makes the crop φ sees, exactly as training did.
The engine only reads the files here; drawing new people is the experiment's (webui/demo.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import InvalidImageError, MissingWeightsError
from .face.alignment import align_faces
from .face.analyzer import FaceAnalysis
from .face.detection import DetectedFace
from .images import image_to_tensor

DEMO_FOLDER = Path(__file__).resolve().parent.parent / "assets" / "demo"
DEMO_PREFIX = "demo:"
PHOTO_NOTE = (
    "The demo model knows drawn people only: for a real photo, install Stable Diffusion 1.5 and "
    "PortraitBooth weights (README, 'Weights')."
)
SHOWN_SIDE = 256  # pictures are shown this large: the model draws 16×16


@dataclass(frozen=True)
class DrawnPerson:
    """A drawn person's reference picture with its known landmarks (what a detector would have found)."""

    name: str
    identity_word: str  # man or woman: the word of the prompt that gets the face
    image: Image.Image  # RGB, the model's size
    landmarks: np.ndarray  # (5, 2) float32 pixel centres: eyes, nose, mouth corners
    expression: str  # the expression the reference shows

    def analysis(self) -> FaceAnalysis:
        """The person's face as the face analyser would report it, aligned from the known landmarks."""
        landmarks = torch.from_numpy(self.landmarks)[None]
        aligned = align_faces(image_to_tensor(self.image)[None], landmarks)[0]
        (x0, y0), (x1, y1) = self.landmarks.min(axis=0), self.landmarks.max(axis=0)
        return FaceAnalysis(
            self.image, DetectedFace((float(x0), float(y0), float(x1), float(y1)), self.landmarks, 1.0), 1, aligned
        )


DEMO_MODEL = DEMO_FOLDER / "model"  # a saved PortraitBooth pipeline, loaded like any other base


def demo_available(folder: Path = DEMO_FOLDER) -> bool:
    return (folder / "model" / "model_index.json").is_file() and (folder / "people.json").is_file()


def check_demo(folder: Path = DEMO_FOLDER) -> None:
    if not demo_available(folder):
        raise MissingWeightsError(
            f"The demo model is not in {folder} (model/, people.json): restore assets/demo/ from git"
        )


def example_people(folder: Path = DEMO_FOLDER) -> list[DrawnPerson]:
    """The example people: held-out people of the experiment, never seen by any training step."""
    record = json.loads((folder / "people.json").read_text())
    return [
        DrawnPerson(
            name=entry["name"],
            identity_word=entry["identity_word"],
            image=Image.open(folder / entry["image"]).convert("RGB"),
            landmarks=np.asarray(entry["landmarks"], dtype=np.float32),
            expression=entry["expression"],
        )
        for entry in record["people"]
    ]


def example_person(name: str, folder: Path = DEMO_FOLDER) -> DrawnPerson:
    """The example person called `name` (e.g. "person 3"; `demo:3` on the command line)."""
    people = {person.name: person for person in example_people(folder)}
    chosen = people.get(name) or people.get(f"person {name}")
    if chosen is None:
        raise InvalidImageError(f"Unknown demo person {name!r}; choose one of {', '.join(people)}")
    return chosen


def enlarged(image: Image.Image, side: int = SHOWN_SIDE) -> Image.Image:
    """`image` scaled up by a whole factor to about `side` pixels high, pixels kept sharp (nearest), with
    its metadata (PNG text)."""
    factor = max(1, round(side / image.height))
    large = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    large.info.update(image.info)
    return large
