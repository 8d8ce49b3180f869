"""The app through its public API (gradio_client), as scripts and other programs use it."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image, ImageOps

from app_server import AppServer

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
    assert {"/detect_face", "/generate", "/generate_pair", "/check_selfies", "/edit_photo"} <= endpoints, endpoints


def test_detect_face(client, photos):
    preview, message = client.predict(handle_file(str(photos["selfie.png"])), api_name="/detect_face")
    assert preview["path"] is None and preview["url"].startswith("data:image/png;base64,")  # sent, never written
    assert Image.open(io.BytesIO(base64.b64decode(preview["url"].split(",", 1)[1]))).size == (256, 256)
    assert message.startswith("Face found")


def test_generate_single_with_defaults(client, photos):
    gallery, info = generate(client, photos["selfie.png"], seed=11, randomize_seed=False, num_images=2)
    assert len(gallery) == 2 and "2 images in" in info
    assert gallery[0]["caption"].startswith("seed 11 · 1 steps") and gallery[1]["caption"].startswith("seed 12")
    assert Image.open(
        gallery[0]["image"]["path"] if isinstance(gallery[0]["image"], dict) else gallery[0]["image"]
    ).size == (64, 64)


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


def raw_call(server, endpoint: str, body: str) -> str:
    """A request as any HTTP client may send it, JSON written by hand (NaN and all); the event stream's end."""
    started = httpx.post(
        f"{server.url}gradio_api/call/{endpoint}",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    if started.status_code != 200:
        return f"HTTP {started.status_code}: {started.text}"
    return httpx.get(f"{server.url}gradio_api/call/{endpoint}/{started.json()['event_id']}", timeout=120).text


def file_data(path: str) -> str:
    return json.dumps({"path": path, "meta": {"_type": "gradio.FileData"}})


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("https://example.com/face.png", "Links are not fetched"),
        ("http://127.0.0.1:22/", "Links are not fetched"),
        ("/etc/passwd", "was not uploaded by a user"),
        ("../../../../etc/passwd", "was not uploaded by a user"),
        ("file:///etc/passwd", "was not uploaded by a user"),
    ],
)
def test_links_and_server_paths_are_neither_fetched_nor_read(server, path, message):
    stream = raw_call(server, "detect_face", f"[{file_data(path)}]".join(['{"data":', "}"]))
    assert "event: error" in stream and message in stream and "root:" not in stream


def test_awkward_files(client, photos, tmp_path, astronaut):
    (tmp_path / "zero.png").write_bytes(b"")
    whole = photos["selfie.png"].read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    Image.new("L", (20000, 20000)).save(tmp_path / "bomb.png", optimize=True)  # 400 MP of zeros in a few hundred KB
    for name, message in (
        ("zero.png", "Could not read zero.png"),
        ("cut.png", "truncated"),
        ("bomb.png", "decompression bomb"),
    ):
        with pytest.raises(Exception, match=message) as error:
            generate(client, tmp_path / name)
        assert "/" not in str(error.value).split("Could not read ")[-1].split(" as ")[0]  # no server path told
    (tmp_path / "big.bin").write_bytes(b"\0" * (41 * 2**20))
    with pytest.raises(Exception, match="exceeds the maximum file size"):
        generate(client, tmp_path / "big.bin")


def test_out_of_range_numbers_even_as_raw_json(server, client, photos):
    upload = httpx.post(
        f"{server.url}gradio_api/upload", files={"files": open(photos["selfie.png"], "rb")}, timeout=30
    ).json()[0]
    face = file_data(upload)
    # generate's inputs: face, prompt, word, custom word, expression, negative, images, seed, random seed, steps, guidance,
    # size, start, fast, style, kept
    body = '{"data": [%s, "a woman", "woman", "", "none", "", %s, %s, %s, %s, %s, %s, %s, false, "none", "no style", true, null, "canny", 1.0, null, null]}'
    cases = {
        ("1", "0", "true", "1", "NaN", '"Square 1:1"', "0"): "Guidance must be between 0 and 30",
        ("1", "0", "true", "Infinity", "5", '"Square 1:1"', "0"): "greater than maximum value 100",
        ("1", "0", "true", "1", "5", '"Square 1:1"', "NaN"): "identity_start must be between 0 and 1",
        ("1", "1e30", "false", "1", "5", '"Square 1:1"', "0"): "Seed must be a whole number",
        ("1", "-3", "false", "1", "5", '"Square 1:1"', "0"): "Seed must be a whole number",
        ("1000", "0", "true", "1", "5", '"Square 1:1"', "0"): "greater than maximum value 4",
        ("1", "0", "true", "0", "5", '"Square 1:1"', "0"): "less than minimum value 1",
        ("1", "0", "true", "10000", "5", '"Square 1:1"', "0"): "greater than maximum value 100",
        ("1", "0", "true", "1", "5", '"Huge 99:1"', "0"): "not in the list of choices",
    }
    for values, message in cases.items():
        stream = raw_call(server, "generate", body % (face, *values))
        assert "event: error" in stream and message in stream, (values, stream[-500:])
    with pytest.raises(Exception, match="greater than maximum value 0.8"):
        client.predict(handle_file(str(photos["selfie.png"])), handle_file(str(photos["mirrored.png"])), "a man and a woman",
                       split=5, steps=1, api_name="/generate_pair")  # fmt: skip


def test_prompts_and_words_of_every_kind(client, photos):
    with pytest.raises(Exception, match="99999 characters long"):
        generate(client, photos["selfie.png"], "a woman " * 12500)
    assert (
        "1 image in" in generate(client, photos["selfie.png"], "😀🎉🌈")[1]
    )  # emoji only: "a photo of a woman, 😀🎉🌈"
    with pytest.raises(Exception, match="must be a single word"):
        generate(client, photos["selfie.png"], "a young woman", identity_word="custom", custom_word="young woman")
    with pytest.raises(Exception, match="not in the list of choices"):
        generate(client, photos["selfie.png"], "a young woman", identity_word="young woman")


def test_the_same_photo_for_both_people(client, photos):
    gallery, info = client.predict(handle_file(str(photos["selfie.png"])), handle_file(str(photos["selfie.png"])),
                                   "a photo of a man and a woman", steps=1, api_name="/generate_pair")  # fmt: skip
    assert len(gallery) == 1 and "A: the first 'man'" in info


def test_25_concurrent_mixed_requests_then_still_serving_at_the_same_memory(server, photos):
    def one(index: int) -> str:
        client = Client(server.url, verbose=False)
        try:
            kind = index % 5
            if kind == 0:
                gallery, _ = generate(client, photos["selfie.png"], steps=3)
            elif kind == 1:
                gallery, _ = client.predict(handle_file(str(photos["selfie.png"])), handle_file(str(photos["mirrored.png"])),
                                            "a photo of a man and a woman", steps=2, api_name="/generate_pair")  # fmt: skip
            elif kind == 2:
                gallery = [client.predict(handle_file(str(photos["selfie.png"])), api_name="/detect_face")]
            elif kind == 3:
                generate(client, photos["blank.png"])
                return "wrong"
            else:
                generate(client, photos["selfie.png"], "a woman " * 500)
                return "wrong"
            return "done" if gallery else "wrong"
        except Exception as error:  # noqa: BLE001 - the message is what is checked
            text = str(error)
            if "queue" in text.lower():
                return "full"
            return "refused" if ("No face found" in text or "characters long" in text) else f"error: {text}"

    generate(Client(server.url, verbose=False), photos["selfie.png"])  # warm: models and caches in memory
    before = server.resident_megabytes()
    with ThreadPoolExecutor(25) as pool:
        outcomes = list(pool.map(one, range(25)))
    assert set(outcomes) <= {"done", "full", "refused"} and "done" in outcomes, outcomes
    assert generate(Client(server.url, verbose=False), photos["selfie.png"])[0]  # still serving
    assert server.resident_megabytes() - before < 150  # nothing kept per request
