"""The creative tools through the app's public API (gradio_client), on a `python app.py --tiny` server."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image, ImageEnhance

from app_server import AppServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    server = AppServer(tmp_path_factory.mktemp("creative") / "gradio-cache")
    yield Client(server.url, verbose=False)
    server.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory, astronaut):
    from skimage import data

    folder = tmp_path_factory.mktemp("creative-files")
    astronaut.save(folder / "selfie.png")
    ImageEnhance.Brightness(astronaut).enhance(1.2).save(folder / "bright.png")
    Image.fromarray(data.camera()).convert("RGB").save(folder / "other.png")
    layer = np.zeros((512, 512, 4), np.uint8)
    layer[48:176, 160:288] = (255, 0, 0, 255)
    Image.fromarray(layer, "RGBA").save(folder / "layer.png")
    return folder


def path_of(item) -> str:
    image = item["image"]
    return image["path"] if isinstance(image, dict) else image


def test_endpoints_are_named(client):
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/generate", "/generate_pair", "/edit_photo", "/check_selfies"} <= endpoints


def test_style_size_detailer_and_control_through_generate(client, files):
    gallery, info = client.predict(
        handle_file(str(files / "selfie.png")), "a photo of a woman", steps=1, aspect="Portrait 3:4",
        style_template="Cinematic", control_image=handle_file(str(files / "bright.png")), api_name="/generate",
    )  # fmt: skip
    caption = gallery[0]["caption"]
    assert (
        "style Cinematic" in caption
        and "canny control · scale 1" in caption
        and "cinematic still of a photo of a woman" in caption
    )
    assert Image.open(path_of(gallery[0])).size == (48, 80) and "48×80" in caption and "Face detailer ran" in info


def test_edit_photo_keeps_the_unpainted_pixels(client, files, astronaut):
    # Not the selfie's own file: Gradio names uploads by content, and the selfie's is taken (read, deleted) first.
    photo = {
        "background": handle_file(str(files / "bright.png")),
        "layers": [handle_file(str(files / "layer.png"))],
        "composite": None,
    }
    gallery, info = client.predict(photo, handle_file(str(files / "selfie.png")), "a photo of a woman", region="Where I painted",
                                   steps=2, api_name="/edit_photo")  # fmt: skip
    edited = np.asarray(Image.open(path_of(gallery[0])).convert("RGB"))
    outside = np.ones((512, 512), bool)
    outside[48:176, 160:288] = False
    change = np.abs(edited.astype(int) - np.asarray(Image.open(files / "bright.png").convert("RGB")).astype(int))
    # The app marks every picture with an invisible watermark, which moves pixels everywhere a little.
    assert change[outside].mean() < 2 < 10 < change[~outside].mean() and "inpainted" in gallery[0]["caption"]


def test_a_stranger_among_the_selfies_is_flagged(client, files):
    more = [handle_file(str(files / "bright.png")), handle_file(str(files / "other.png"))]
    gallery, note = client.predict(handle_file(str(files / "selfie.png")), more, api_name="/check_selfies")
    assert len(gallery) == 2 and note.startswith(
        "Photo 3 does not look like the same person"
    )  # the further photos; the selfie has its own preview
