"""Face detailer on pictures with real, detectable faces (scikit-image's astronaut pasted small into a canvas).

The tiny random model draws no face, so the detailer step is run directly on such pictures, with the real
MTCNN detector and the tiny pipeline's img2img doing the re-drawing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from portrait.cli import main
from portrait.detailer import DetailerSettings, FaceDetailer, crop_box, feather_mask
from portrait.face.detection import DetectedFace
from portrait.multi import default_regions
from portrait.prompts import build_subject_prompts

from helpers import CHANGED, largest_difference

STEPS = dict(num_inference_steps=5, guidance_scale=5.0)


def canvas_with_faces(astronaut: Image.Image, mirrored: bool = False) -> Image.Image:
    """A 256² canvas with the astronaut 128² at the left (faces ~25 px, under 1/5 of 256) and, when asked, mirrored at the right."""
    canvas = Image.new("RGB", (256, 256), (120, 140, 160))
    small = astronaut.resize((128, 128), Image.LANCZOS)
    canvas.paste(small, (20, 100))
    if mirrored:
        canvas.paste(ImageOps.mirror(small), (108, 100))
    return canvas


@pytest.fixture(scope="module")
def detailer(tiny_pipe):
    return FaceDetailer(tiny_pipe)


def test_crop_and_feather_numbers():
    face = DetectedFace((40.0, 50.0, 60.0, 80.0), np.zeros((5, 2), np.float32), 1.0)
    assert crop_box(face, (256, 256), 0.5) == (20, 35, 80, 95)  # side 30·2, centred on (50, 65)
    assert crop_box(face, (70, 256), 0.5) == (10, 35, 70, 95)  # moved inside the picture
    mask = feather_mask(10, 10, 0.2)  # ramp of 2 pixels: 0.25, 0.75, then 1
    np.testing.assert_allclose(mask[5, :3], [0.25, 0.75, 1.0])
    np.testing.assert_allclose(mask[0, 0], 0.25)


def test_a_small_face_is_redrawn_and_nothing_far_from_it_changes(detailer, tiny_pipe, astronaut, astronaut_face):
    canvas = canvas_with_faces(astronaut)
    prompts = tiny_pipe.identity_prompts("a photo of a woman")
    result, report = detailer.detail(canvas, prompts, [astronaut_face], **STEPS)
    (face,) = report.detailed
    x0, y0, x1, y1 = face.crop
    assert face.person == 0 and x1 - x0 < 80  # a crop around the ~25-pixel face, not the picture
    before, after = np.asarray(canvas).astype(int), np.asarray(result).astype(int)
    outside = np.ones(before.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(before[outside], after[outside])
    assert largest_difference(before[y0:y1, x0:x1], after[y0:y1, x0:x1]) > 10  # re-drawn (by a random model)
    assert report.note(detailer.settings).startswith("Face detailer ran: re-drew 1 small face(s) (person 1)")


def test_big_faces_are_left_alone(detailer, tiny_pipe, astronaut, astronaut_face):
    result, report = detailer.detail(astronaut, tiny_pipe.identity_prompts("a woman"), [astronaut_face], **STEPS)
    assert (
        np.array_equal(np.asarray(result), np.asarray(astronaut)) and report.detailed == [] and report.big_enough == 1
    )
    assert report.note(detailer.settings) == (
        "Face detailer ran: no face smaller than 1/5 of the picture's side; 1 face(s) large enough already."
    )
    lenient = FaceDetailer(tiny_pipe, DetailerSettings(max_face_fraction=0.5))
    assert (
        len(lenient.detail(astronaut, tiny_pipe.identity_prompts("a woman"), [astronaut_face], **STEPS)[1].detailed)
        == 1
    )


def test_two_faces_each_get_their_own_identity(detailer, tiny_pipe, astronaut):
    canvas = canvas_with_faces(astronaut, mirrored=True)
    a, b = tiny_pipe.encode_faces(astronaut), tiny_pipe.encode_faces(ImageOps.grayscale(ImageOps.mirror(astronaut)))
    prompts = build_subject_prompts("a photo of a man and a woman", [None, None], [None, None])
    regions = default_regions(2, 256, 256)
    both, report = detailer.detail(canvas, prompts, [a, b], regions, **STEPS)
    assert [face.person for face in report.detailed] == [0, 1]  # left face: person A, right face: person B
    left, right = (face.crop for face in report.detailed)

    def part(image: Image.Image, box) -> np.ndarray:
        return np.asarray(image.crop(box)).astype(int)

    only_a, _ = detailer.detail(canvas, prompts[:1], [a], **STEPS)
    only_b, _ = detailer.detail(canvas, prompts[1:], [b], **STEPS)
    assert np.array_equal(part(both, left), part(only_a, left)) and np.array_equal(
        part(both, right), part(only_b, right)
    )
    assert largest_difference(part(only_a, left), part(only_b, left)) > CHANGED  # the identity matters


def test_cli_runs_it_by_default_and_says_so(tmp_path, capsys):
    args = ["generate", "--tiny", "--face", "example:astronaut", "--prompt", "a woman", "--steps", "1", "--seed", "5"]
    assert main([*args, "--out", str(tmp_path / "on")]) == 0
    assert "seed 5: Face detailer ran" in capsys.readouterr().out
    assert Image.open(tmp_path / "on" / "portrait-5.png").text["detailer"].startswith("Face detailer ran")
    assert main([*args, "--no-detailer", "--out", str(tmp_path / "off")]) == 0
    assert "Face detailer" not in capsys.readouterr().out
    assert Image.open(tmp_path / "off" / "portrait-5.png").text["detailer"] == "off"


def test_app_note_says_it_ran(tiny_pipe, astronaut):
    from webui.handlers import PortraitService

    service = PortraitService(tiny_pipe, example=astronaut)

    remembered = service.use_example()[3]  # what the session keeps: the face encoding, by name
    _, info = service.generate(None, "a woman", steps=1, remembered_face=remembered)
    assert "Face detailer ran" in info
    _, info = service.generate(None, "a woman", steps=1, remembered_face=remembered, detailer=False)
    assert "Face detailer" not in info
