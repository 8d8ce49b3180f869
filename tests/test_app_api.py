"""The app through its public API (gradio_client), as scripts and other programs use it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from app_server import AppServer
from gradio_client import Client, handle_file
from PIL import Image, ImageOps

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = AppServer(tmp_path_factory.mktemp("app") / "gradio-cache", "--max-queue", "4")
    yield app
    app.stop()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut):
    """Upload files of every awkward kind, written by the test."""
    folder = tmp_path_factory.mktemp("photos")
    paths = {}

    def save(name, image, **params):
        paths[name] = folder / name
        image.save(paths[name], **params)

    save("selfie.png", astronaut)
    save("mirrored.png", ImageOps.mirror(astronaut))
    save("blank.png", Image.new("RGB", (300, 200), "white"))
    save("tiny.png", astronaut.resize((16, 16)))
    save("cmyk.jpg", astronaut.convert("CMYK"))
    save("gray16.png", Image.fromarray((np.asarray(astronaut.convert("L"), dtype=np.uint16) * 257)))
    save("rgba.png", astronaut.convert("RGBA"))
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90° counter-clockwise to display
    save("rotated.jpg", astronaut.rotate(-90, expand=True), exif=exif)
    save("animated.gif", astronaut, save_all=True, append_images=[ImageOps.mirror(astronaut)], duration=200)
    canvas = Image.new("RGB", (900, 520), (200, 200, 200))
    face = astronaut.crop((150, 30, 300, 210))
    canvas.paste(face.resize((100, 120)), (40, 200))
    canvas.paste(face, (500, 150))
    save("two_faces.png", canvas)
    save("huge.png", Image.new("1", (12000, 12000)))
    paths["corrupt.png"] = folder / "corrupt.png"
    paths["corrupt.png"].write_bytes(b"\x89PNG\r\n\x1a\n this is not really a picture")
    return paths


def generate(client, face, prompt="a photo of a woman in the snow", **options):
    options.setdefault("steps", 1)
    return client.predict(handle_file(str(face)), prompt, **options, api_name="/generate")


def test_named_endpoints(client):
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/detect_face", "/generate", "/generate_pair"} <= endpoints


def test_detect_face(client, photos):
    preview, message = client.predict(handle_file(str(photos["selfie.png"])), api_name="/detect_face")
    assert Image.open(preview).size == (256, 256) and message.startswith("Face found")


def test_generate_single_with_defaults(client, photos):
    gallery, info = generate(client, photos["selfie.png"], seed=11, randomize_seed=False, num_images=2)
    assert len(gallery) == 2 and "2 images in" in info
    assert gallery[0]["caption"].startswith("seed 11 · 1 steps") and gallery[1]["caption"].startswith("seed 12")
    assert Image.open(gallery[0]["image"]["path"] if isinstance(gallery[0]["image"], dict) else gallery[0]["image"]).size == (64, 64)


def test_generate_pair(client, photos):
    gallery, info = client.predict(
        handle_file(str(photos["selfie.png"])),
        handle_file(str(photos["mirrored.png"])),
        "a photo of a man and a woman smiling in front of a bar",
        steps=1,
        api_name="/generate_pair",
    )
    assert len(gallery) == 1 and "A: the first 'man'" in info and "B: the second 'woman'" in info


@pytest.mark.parametrize("name", ["cmyk.jpg", "gray16.png", "rgba.png", "rotated.jpg", "animated.gif"])
def test_odd_but_valid_photos_work(client, photos, name):
    gallery, _ = generate(client, photos[name])
    assert len(gallery) == 1


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("blank.png", "No face found in the 300×200 image"),
        ("tiny.png", "No face found in the 16×16 image"),
        ("corrupt.png", "Could not read"),
        ("huge.png", "12000×12000"),
    ],
)
def test_bad_photos_get_clear_messages(client, photos, name, message):
    with pytest.raises(Exception, match=message):
        generate(client, photos[name])


def test_several_faces_use_the_largest(client, photos):
    _, message = client.predict(handle_file(str(photos["two_faces.png"])), api_name="/detect_face")
    assert "Found 2 faces; using the largest" in message


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("", "did not name the subject"),
        ("in the snow", "did not name the subject"),
        ("<b>a woman</b> 😀 <script>alert(1)</script>", "1 image in"),
    ],
)
def test_prompts_that_work_with_a_note(client, photos, prompt, expected):
    _, info = generate(client, photos["selfie.png"], prompt)
    assert expected in info


def test_overlong_prompt_and_bad_options_are_refused(client, photos):
    with pytest.raises(Exception, match="characters long"):
        generate(client, photos["selfie.png"], "a woman " + "very " * 500)
    with pytest.raises(Exception, match="custom identity word"):
        generate(client, photos["selfie.png"], identity_word="custom", custom_word="")
    with pytest.raises(Exception, match="two faces were given|2 faces were given but the prompt names 1 person"):
        client.predict(
            handle_file(str(photos["selfie.png"])), handle_file(str(photos["selfie.png"])), "a woman at a bar",
            steps=1, api_name="/generate_pair",
        )  # fmt: skip


def test_server_paths_cannot_be_read(server):
    payload = {"data": [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "a man"]}
    started = httpx.post(f"{server.url}gradio_api/call/generate", json=payload, timeout=30)
    if started.status_code == 200:
        event_id = started.json()["event_id"]
        stream = httpx.get(f"{server.url}gradio_api/call/generate/{event_id}", timeout=60).text
        assert "event: error" in stream and "root:" not in stream
    else:
        assert started.status_code >= 400


def test_uploads_do_not_outlive_the_request(server, client, photos):
    generate(client, photos["selfie.png"])
    client.predict(handle_file(str(photos["mirrored.png"])), api_name="/detect_face")
    left = [p.name for p in server.cache_dir.rglob("*") if p.is_file() and p.name in ("selfie.png", "mirrored.png")]
    assert left == []


def test_ten_concurrent_requests_finish_or_hear_queue_full(server, photos):
    def one(index):
        try:
            gallery, _ = generate(Client(server.url, verbose=False), photos["selfie.png"], steps=3)
            return "done" if len(gallery) == 1 else "wrong"
        except Exception as error:  # noqa: BLE001 - the message is what is checked
            return "full" if "queue" in str(error).lower() else f"error: {error}"

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(one, range(10)))
    assert set(outcomes) <= {"done", "full"} and "done" in outcomes, outcomes
    assert generate(Client(server.url, verbose=False), photos["selfie.png"])[0]  # still serving
