"""Your face in your photo: inpainting keeps everything outside the region, img2img at strength 0 is the photo."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from portrait.cli import main
from portrait.edit import edit_photo, face_region, working_size
from portrait.errors import NoFaceError, OptionError

from helpers import CHANGED, largest_difference, seeded

BOX = (160, 48, 288, 176)  # a region over the astronaut's face, on the 8-pixel latent grid


def box_mask(size: tuple[int, int] = (512, 512)) -> np.ndarray:
    mask = np.zeros(size[::-1], np.uint8)
    mask[BOX[1] : BOX[3], BOX[0] : BOX[2]] = 255
    return mask


def latents_per_step(tiny_pipe, astronaut, face, prompt: str) -> tuple[list, list]:
    seen, masks = [], []

    def record(pipe, step, timestep, tensors):
        seen.append(tensors["latents"].clone())
        masks.append(tensors["mask"][:1].clone())
        return {}

    result = edit_photo(tiny_pipe, astronaut, prompt, face, box_mask(), num_inference_steps=3, generator=seeded(0),
                        callback_on_step_end=record, callback_on_step_end_tensor_inputs=["latents", "mask"])  # fmt: skip
    return result.images[0], list(zip(seen, masks))


def test_inpainting_keeps_everything_outside_the_mask(tiny_pipe, astronaut, astronaut_face):
    snow, steps_snow = latents_per_step(tiny_pipe, astronaut, astronaut_face, "a photo of a woman in the snow")
    beach, steps_beach = latents_per_step(tiny_pipe, astronaut, astronaut_face, "a photo of a woman on the beach")
    assert snow.size == astronaut.size
    photo, outside = np.asarray(astronaut), box_mask() == 0
    assert np.array_equal(np.asarray(snow)[outside], photo[outside])  # the photo's own pixels
    inside = ~outside
    assert largest_difference(np.asarray(snow)[inside], photo[inside]) > 10
    assert largest_difference(np.asarray(snow)[inside], np.asarray(beach)[inside]) > CHANGED  # the prompt acts inside
    # At every step the latents outside the mask are the photo's, noised to that step: the same whatever the prompt.
    for (a, mask), (b, _) in zip(steps_snow, steps_beach):
        keep = (mask[0, 0] == 0).expand_as(a[0])
        assert keep.any() and (~keep).any()
        assert (
            bool((a[0][keep] == b[0][keep]).all())
            and largest_difference(a[0][~keep].numpy(), b[0][~keep].numpy()) > CHANGED
        )


def test_img2img_strength_zero_returns_the_photo_and_strength_changes_it(tiny_pipe, astronaut, astronaut_face):
    same = edit_photo(tiny_pipe, astronaut, "a woman", astronaut_face, strength=0.0, num_images_per_prompt=2)
    assert all(np.array_equal(np.asarray(image), np.asarray(astronaut)) for image in same.images)
    restyled = edit_photo(
        tiny_pipe, astronaut, "a woman", astronaut_face, strength=0.5, num_inference_steps=2, generator=seeded(0)
    )
    assert restyled.images[0].size == working_size(astronaut.size, 64) == (64, 64)
    with pytest.raises(OptionError, match="strength must be between 0 and 1"):
        edit_photo(tiny_pipe, astronaut, "a woman", astronaut_face, strength=1.5)


def test_the_default_region_is_the_face(tiny_pipe, astronaut):
    region = np.asarray(face_region(tiny_pipe, astronaut)) > 0
    rows, columns = np.nonzero(region)
    assert 140 < columns.min() < 181 and 268 < columns.max() < 310 and rows.min() < 62 and rows.max() > 172
    with pytest.raises(NoFaceError, match="draw the region"):
        face_region(tiny_pipe, Image.new("RGB", (128, 128), "white"))


def test_cli_inpaints_and_restyles(tmp_path, capsys):
    args = ["generate", "--tiny", "--face", "example:astronaut", "--prompt", "a woman", "--steps", "2", "--seed", "1"]
    photo = tmp_path / "photo.png"
    Image.fromarray(np.asarray(Image.open("assets/faces/astronaut.png").convert("RGB"))).save(photo)
    Image.fromarray(box_mask()).save(tmp_path / "mask.png")
    assert (
        main([*args, "--init-image", str(photo), "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "a")])
        == 0
    )
    inpainted = Image.open(tmp_path / "a" / "portrait-1.png")
    assert inpainted.size == (512, 512) and inpainted.text["edit"] == "photo.png inpainted in mask mask.png, strength 1"
    assert main([*args, "--init-image", str(photo), "--strength", "0.5", "--out", str(tmp_path / "b")]) == 0
    assert Image.open(tmp_path / "b" / "portrait-1.png").text["edit"] == "photo.png restyled, strength 0.5"
    capsys.readouterr()
    assert main([*args, "--mask", "face"]) == 2
    assert "--mask and --strength edit a photo: give it with --init-image" in capsys.readouterr().err
    assert main([*args, "--init-image", str(photo), "--strength", "2", "--out", str(tmp_path)]) == 2
    assert "strength must be between 0 and 1, got 2.0" in capsys.readouterr().err


def test_app_puts_the_selfie_where_the_user_painted(tiny_pipe, astronaut, tmp_path):
    from webui.editing import PhotoEdits
    from webui.handlers import PortraitService

    edits = PhotoEdits(PortraitService(tiny_pipe, example=astronaut))
    remembered = edits.service.use_example()[3]  # what the session keeps: the face encoding, by name
    astronaut.save(tmp_path / "photo.png")
    layer = np.zeros((512, 512, 4), np.uint8)
    layer[BOX[1] : BOX[3], BOX[0] : BOX[2]] = (255, 0, 0, 255)  # what the editor's brush leaves: paint with alpha
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    photo = {"background": str(tmp_path / "photo.png"), "layers": [str(tmp_path / "layer.png")], "composite": None}
    gallery, info = edits.edit(photo, None, "a woman", region="Where I painted", steps=2, remembered_face=remembered)
    ((image, caption),) = gallery
    outside = box_mask() == 0
    assert np.array_equal(np.asarray(image)[outside], np.asarray(astronaut)[outside])
    assert "photo inpainted (where i painted), strength 0.8" in caption and "512×512" in caption
    gallery, _ = edits.edit(
        photo, None, "a woman", region="The whole photo (restyle)", strength=0.0, remembered_face=remembered
    )
    assert np.array_equal(np.asarray(gallery[0][0]), np.asarray(astronaut))
    empty = {"background": str(tmp_path / "photo.png"), "layers": [], "composite": None}
    with pytest.raises(Exception, match="Paint over the part of the photo"):
        edits.edit(empty, None, "a woman", region="Where I painted", remembered_face=remembered)
