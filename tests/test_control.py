"""Pose and layout from a picture: a tiny random ControlNet (shaped from the tiny UNet) steers one and two people."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from portrait.cli import main
from portrait.control import control_map, controlled, load_controlnet
from portrait.errors import MissingWeightsError
from portrait.multi import Person, PortraitBoothPeoplePipeline

from helpers import CHANGED, largest_difference, seeded

STEPS = dict(num_inference_steps=2, output_type="np")


@pytest.fixture(scope="module")
def controlnet(tiny_pipe):
    return load_controlnet("canny", tiny_pipe, random_weights=True)


def test_canny_works_offline_on_a_real_photo(astronaut):
    edges = np.asarray(control_map("canny", astronaut))
    assert edges.shape == (512, 512, 3) and set(np.unique(edges)) == {0, 255} and 0.02 < (edges > 0).mean() < 0.5


def test_a_controlnet_steers_one_person(tiny_pipe, astronaut, astronaut_face, controlnet):
    edges = control_map("canny", astronaut)
    plain = tiny_pipe("a woman", face=astronaut_face, generator=seeded(0), **STEPS).images
    steered = controlled(tiny_pipe, controlnet, edges)(
        "a woman", face=astronaut_face, generator=seeded(0), **STEPS
    ).images
    assert largest_difference(plain, steered) > CHANGED
    other = control_map("canny", astronaut.transpose(Image.FLIP_TOP_BOTTOM))
    assert largest_difference(steered, controlled(tiny_pipe, controlnet, other)("a woman", face=astronaut_face,
                                                                                  generator=seeded(0), **STEPS).images) > CHANGED  # fmt: skip
    unsteered = controlled(tiny_pipe, controlnet, edges, scale=0.0)(
        "a woman", face=astronaut_face, generator=seeded(0), **STEPS
    ).images
    assert largest_difference(plain, unsteered) < 1e-6  # scale 0: the ControlNet adds nothing


def test_a_controlnet_steers_two_people(tiny_pipe, astronaut, astronaut_face, controlnet):
    people = [Person(astronaut_face), Person(tiny_pipe.encode_faces(astronaut.transpose(Image.FLIP_LEFT_RIGHT)))]
    edges = control_map("canny", astronaut)
    plain = tiny_pipe.with_modules(PortraitBoothPeoplePipeline)(
        "a man and a woman", people, generator=seeded(0), **STEPS
    ).images
    pair = controlled(tiny_pipe, controlnet, edges, 80, 48).with_modules(PortraitBoothPeoplePipeline)
    steered = pair("a man and a woman", people, generator=seeded(0), width=80, height=48, **STEPS).images
    assert steered.shape == (1, 48, 80, 3)
    plain = tiny_pipe.with_modules(PortraitBoothPeoplePipeline)("a man and a woman", people, generator=seeded(0), width=80,
                                                                height=48, **STEPS).images  # fmt: skip
    assert largest_difference(plain, steered) > CHANGED


def test_a_missing_annotator_is_one_line_naming_its_weight(tmp_path, offline, capsys, astronaut):
    with pytest.raises(MissingWeightsError, match="put body_pose_model.pth in"):
        control_map("openpose", astronaut, tmp_path)
    args = [
        "generate",
        "--tiny",
        "--face",
        "example:astronaut",
        "--prompt",
        "a woman",
        "--control-image",
        "assets/faces/astronaut.png",
    ]
    assert main([*args, "--control", "depth", "--weights-dir", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("portrait: error: Depth annotator Intel/dpt-hybrid-midas is not in the Hugging Face cache")


def test_cli_follows_a_picture_for_one_and_two_people(tmp_path, capsys):
    args = ["generate", "--tiny", "--face", "example:astronaut", "--steps", "2", "--seed", "4", "--control-image",
            "assets/faces/astronaut.png", "--no-detailer"]  # fmt: skip
    assert main([*args, "--prompt", "a woman", "--out", str(tmp_path / "one")]) == 0
    assert Image.open(tmp_path / "one" / "portrait-4.png").text["control"] == "canny from astronaut.png, scale 1"
    assert (
        main([*args, "--face", "example:astronaut", "--prompt", "a man and a woman", "--out", str(tmp_path / "two")])
        == 0
    )
    assert main([*args, "--prompt", "a woman", "--init-image", "assets/faces/astronaut.png"]) == 2
    assert "does not combine with --init-image" in capsys.readouterr().err


def test_app_takes_a_control_picture(tiny_pipe, astronaut, tmp_path):
    from webui.handlers import PortraitService

    service = PortraitService(tiny_pipe, example=astronaut, random_controlnets=True)

    remembered = service.use_example()[3]  # what the session keeps: the face encoding, by name
    astronaut.save(tmp_path / "pose.png")
    gallery, _ = service.generate(None, "a woman", steps=1, remembered_face=remembered, control_image=str(tmp_path / "pose.png"),
                                  detailer=False)  # fmt: skip
    assert "canny control · scale 1" in gallery[0][1]
    gallery, _ = service.generate_pair(None, None, "a man and a woman", steps=1, remembered_face_a=remembered,
                                       remembered_face_b=remembered, control_image=str(tmp_path / "pose.png"))  # fmt: skip
    assert "canny control" in gallery[0][1]
