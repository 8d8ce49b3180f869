"""README's privacy and memory sentences, each checked by what the server does (issue 19).

Files are told apart by their bytes, never by their names: after each request, every file in Gradio's
folder (uploads and cache alike) must be one that was there before or a picture the visitor asked for.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from app_server import AppServer

pytestmark = pytest.mark.slow

VISITORS = 200
# Every input of the endpoint, in the order of the handler's parameters; the creative tools' at their defaults.
CREATIVE_DEFAULTS = '"no style", true, null, "canny", 1.0, null, null'
GENERATE = (
    '{"data": [%s, "a photo of a woman", "woman", "", "none", "", 1, %s, false, %s, 5, "Square 1:1", 0, false, "none", '
    + CREATIVE_DEFAULTS
    + "]}"
)


def encoded(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def contents(server: AppServer) -> dict[str, str]:
    """sha256 → path of every file in the server's Gradio folder."""
    return {
        hashlib.sha256(path.read_bytes()).hexdigest(): str(path)
        for path in server.cache_dir.rglob("*")
        if path.is_file()
    }


def outputs_of(answer) -> set[str]:
    """sha256 of the gallery pictures a generation answered with (the files the visitor asked for)."""
    gallery = answer.value[0] if answer.event == "complete" else []
    return {hashlib.sha256(open(item["image"]["path"], "rb").read()).hexdigest() for item in gallery}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = AppServer(tmp_path_factory.mktemp("privacy") / "gradio-cache", "--max-queue", "1")
    yield app
    app.stop()


@pytest.fixture(scope="module")
def selfie(astronaut) -> bytes:
    return encoded(astronaut)


def distinct(astronaut, index: int, side: int = 512) -> bytes:
    """The astronaut with `index` written in its top-left corner as 16 black or white squares: JPEG keeps them
    apart (a corner patch of nearby colours did not: of 40 such photos only 31 had distinct bytes)."""
    pixels = np.asarray(astronaut.resize((side, side))).copy()
    for bit in range(16):
        pixels[:16, 16 * bit : 16 * bit + 16] = 255 * (index >> bit & 1)
    return encoded(Image.fromarray(pixels), "JPEG", quality=90)


def test_the_face_preview_is_sent_in_the_response_and_never_written(server, selfie):
    """'The face preview is sent inside the response (a data URL) and never written to disk.'"""
    before = contents(server)
    answer = server.call("detect_face", [server.upload(selfie, "me.png")])
    preview, message, *_ = answer.value
    assert answer.event == "complete" and message.startswith("Face found") and preview["path"] is None
    assert Image.open(io.BytesIO(base64.b64decode(preview["url"].split(",", 1)[1]))).size == (256, 256)
    assert contents(server).keys() == before.keys()  # neither the photo nor any picture of the face


def test_only_the_pictures_asked_for_are_written(server, selfie):
    """'The portraits you generate are the only pictures of you written to disk.'"""
    before = contents(server)
    answer = server.call("generate", GENERATE % (json.dumps(server.upload(selfie, "me.png")), "0", "1"))
    assert answer.event == "complete"
    assert contents(server).keys() - before.keys() == outputs_of(answer) and len(outputs_of(answer)) == 1
    assert hashlib.sha256(selfie).hexdigest() not in contents(server)


@pytest.mark.parametrize(
    ("endpoint", "body", "sentence"),
    [
        ("detect_face", '{"data": [%(blank)s]}', "No face found"),
        ("detect_face", '{"data": [%(corrupt)s]}', "Could not read"),
        ("generate", GENERATE % ("%(face)s", "-3", "1"), "Seed must be"),  # refused by the handler
        ("generate", GENERATE % ("%(face)s", "0", "1000"), "greater than maximum value 100"),  # refused by Gradio
        (
            "generate_pair",
            '{"data": [%(face)s, %(other)s, "a man and a woman", "man", "none", "woman", "none", 5, "", 1, 0, true, '
            '1, 5, "Landscape 4:3", false, "none", ' + CREATIVE_DEFAULTS + "]}",
            "greater than maximum value 0.8",
        ),  # fmt: skip
        ("generate_pair", '{"data": [%(face)s, %(other)s, "a man and a woman"]}', "didn't receive enough input values"),
    ],
)
def test_a_request_that_fails_leaves_no_file(server, astronaut, endpoint, body, sentence):
    """'A request that fails leaves no file behind: its uploads are deleted before its other inputs are checked.'"""
    before = contents(server)
    files = {
        "blank": server.upload(encoded(Image.new("RGB", (300, 200), "white")), "blank.png"),
        "corrupt": server.upload(b"\x89PNG\r\n\x1a\n not a picture", "corrupt.png"),
        "face": server.upload(distinct(astronaut, 1), "me.jpg"),
        "other": server.upload(distinct(astronaut, 2), "friend.jpg"),
    }
    answer = server.call(endpoint, body % {name: json.dumps(file) for name, file in files.items()})
    assert answer.event == "error" and sentence in answer.value
    for name in [name for name in files if f"%({name})s" not in body]:
        server.call("detect_face", [files[name]])  # the uploads this case did not use, taken by a request of their own
    assert contents(server).keys() == before.keys()


def test_refused_and_cancelled_requests_leave_no_file(server, astronaut, tmp_path):
    """'... and so does a request the queue refuses (full) or that is cancelled while it waits.'

    The queue is seen full, not assumed so after a sleep: each step waits for the state the server reports
    (one request running, one waiting), and the scene is played again if the running one ended first.
    """
    before = contents(server)
    for _ in range(3):
        full = _request_while_the_queue_is_full(server, astronaut, tmp_path)
        if full is not None:
            break
    assert full is not None, "the running request always ended before the queue could be filled"
    assert full.event in ("error", "http") and "full" in str(full.value).lower()
    time.sleep(1)
    assert contents(server).keys() - before.keys() <= _gallery_files(
        server, before
    )  # the running one's portraits at most
    assert not {hashlib.sha256(distinct(astronaut, i)).hexdigest() for i in (3, 4, 5)} & contents(server).keys()


def _request_while_the_queue_is_full(server, astronaut, tmp_path):
    """Runs a long request, queues a second (cancelled afterwards) and sends a third; the third's answer, or
    None when the long request ended before the third was sent (the queue was not full then)."""
    from gradio_client import Client, handle_file
    from gradio_client.utils import Status

    def submit(name: str, index: int, **settings):
        (tmp_path / name).write_bytes(distinct(astronaut, index))
        return Client(server.url, verbose=False).submit(
            handle_file(str(tmp_path / name)), "a woman", api_name="/generate", **settings
        )

    def reaches(job, codes: set, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while job.status().code not in codes:
            if job.done() or time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    running = submit("running.jpg", 3, num_images=4, steps=100, randomize_seed=False)  # --concurrency 1
    assert reaches(running, {Status.PROCESSING, Status.PROGRESS, Status.ITERATING})
    waiting = submit("waiting.jpg", 4, steps=1)
    assert reaches(waiting, {Status.IN_QUEUE})  # the queue is now full (--max-queue 1)
    long = (GENERATE % ("%s", "0", "100")).replace('"none", "", 1, ', '"none", "", 4, ', 1)  # 4 pictures of 100 steps
    full = server.call("generate", long % json.dumps(server.upload(distinct(astronaut, 5))))
    still_running = not running.done()
    waiting.cancel()
    running.result(timeout=180)
    return full if still_running or full.event != "complete" else None


def _gallery_files(server, before) -> set[str]:
    """Files added since `before` that are generated portraits (64×64 PNGs carrying the AI-generated mark)."""
    found = set()
    for digest, path in contents(server).items():
        if digest not in before:
            with Image.open(path) as image:
                if image.size == (64, 64) and image.text.get("AI-generated") == "yes":
                    found.add(digest)
    return found


@pytest.fixture(scope="module")
def load_server(tmp_path_factory):
    app = AppServer(tmp_path_factory.mktemp("load") / "gradio-cache", "--concurrency", "2")
    yield app
    app.stop()


def test_200_fresh_sessions_with_2048_photos_leave_memory_bounded(load_server, astronaut, selfie):
    """'Each photo input of a session keeps ~1 KB in memory (the face's encoding), never the photo; Gradio keeps
    ~170 KB per session for at most --max-sessions (200) sessions.' Bound checked: +300 MB over 200 visitors,
    four at a time, each with a photo of its own."""
    server = load_server
    for index in range(3):  # warm: the detector's buffers at this size, the first sessions
        assert (
            server.call("detect_face", [server.upload(distinct(astronaut, 10_000 + index, 2048), "big.jpg")]).event
            == "complete"
        )
    before = server.resident_megabytes()
    photos = [distinct(astronaut, index, 2048) for index in range(VISITORS)]
    assert len({hashlib.sha256(photo).hexdigest() for photo in photos}) == VISITORS

    def visit(photo: bytes) -> str:
        answer = server.call("detect_face", [server.upload(photo, "big.jpg")])
        served = answer.event == "complete" and answer.value[1].startswith("Face found")
        return "served" if served else f"{answer.event}: {answer.value}"

    with ThreadPoolExecutor(4) as visitors:
        outcomes = list(visitors.map(visit, photos))
    grown = server.resident_megabytes() - before
    assert outcomes.count("served") == VISITORS, [outcome for outcome in outcomes if outcome != "served"]
    assert grown < 300, f"the server grew by {grown:.0f} MB"
    answer = server.call("generate", GENERATE % (json.dumps(server.upload(selfie, "me.png")), "0", "2"))
    assert answer.event == "complete" and len(answer.value[0]) == 1


def test_one_file_as_the_selfie_and_the_control_picture(load_server, astronaut):
    """'A request that names one file twice (the selfie also as the control picture) reads it once', and the
    file is gone when the request ends."""
    server = load_server
    photo = distinct(astronaut, 20_000)
    before = contents(server)
    file = json.dumps(server.upload(photo, "me.jpg"))
    body = (GENERATE % (file, "0", "1")).replace('true, null, "canny"', f'false, {file}, "canny"')
    answer = server.call("generate", body)
    assert answer.event == "complete" and "canny control" in answer.value[0][0]["caption"], answer.value
    assert contents(server).keys() - before.keys() == outputs_of(answer)
    assert hashlib.sha256(photo).hexdigest() not in contents(server)
