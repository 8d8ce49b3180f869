"""A mini CelebV-Text written by the tests: short OpenCV videos of the astronaut photo, and texts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

FRAMES, SIZE = 12, 256

CLIPS = {
    # clip id: (faces per frame as (scale, x, y), appearance text, emotion text)
    "woman_smiling": (
        [(1.0, 40, 30)],
        "The woman has short brown hair and wears a space suit. She is smiling.",
        "neutral, happy",
    ),
    "woman_surprised": (
        [(0.9, 60, 40)],
        "A lady with short hair. Her suit is orange.",
        "The person is surprised at first and then sad.",
    ),
    "nobody": ([], "The man has a beard.", "neutral"),
    "two_people": ([(0.6, 10, 60), (0.6, 130, 60)], "Two women talk. She laughs.", "happy"),
    "far_away": ([(0.4, 100, 100)], "The woman stands far away.", "neutral"),
    "no_gender": ([(1.0, 40, 30)], "A person with short hair in a space suit.", "neutral"),
}


def write_video(path: Path, faces: list[tuple[float, int, int]], face: Image.Image) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (SIZE, SIZE))
    for frame_index in range(FRAMES):
        canvas = Image.new("RGB", (SIZE, SIZE), (90, 110, 140))
        for scale, x, y in faces:
            scaled = face.resize((round(face.width * scale), round(face.height * scale)))
            canvas.paste(scaled, (x + frame_index, y))  # the subject drifts a little
        writer.write(cv2.cvtColor(np.asarray(canvas), cv2.COLOR_RGB2BGR))
    writer.release()


def make_mini_celebvt(root: Path, astronaut: Image.Image) -> Path:
    face = astronaut.crop((150, 30, 300, 210)).resize((160, 192))
    (root / "videos").mkdir(parents=True)
    for clip_id, (faces, appearance, emotion) in CLIPS.items():
        write_video(root / "videos" / f"{clip_id}.mp4", faces, face)
        for category, text in (("face40_details_new", appearance), ("emotion", emotion), ("action_dur", "talking")):
            (root / "texts" / category).mkdir(parents=True, exist_ok=True)
            (root / "texts" / category / f"{clip_id}.txt").write_text(text)
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return root


class ShoutingCaptioner:
    """A plug-in captioner for the tests: proves any `module:Class` captioner is used and recorded."""

    name = "shouting"

    def caption(self, image, texts, word):
        return f"A {image.width}-PIXEL PHOTO OF SOMEONE SMILING"
