"""The app's request handlers, called directly (no server): the parts a browser cannot easily provoke."""

from __future__ import annotations

import io
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from PIL import Image

from portrait.pipeline import PortraitBoothPipeline
from webui.errors import OUT_OF_MEMORY
from webui.faces import ENTRY_OVERHEAD, FaceMemory, RefusedPhoto
from webui.handlers import PortraitService, canvas_size
from webui.uploads import take


@pytest.fixture
def service(tiny_pipe, astronaut):
    return PortraitService(tiny_pipe, example=astronaut)


@pytest.fixture(scope="module")
def selfie(astronaut) -> bytes:
    buffer = io.BytesIO()
    astronaut.save(buffer, format="PNG")
    return buffer.getvalue()


def test_canvas_sizes():
    assert canvas_size("Square 1:1", 512) == (512, 512)
    assert canvas_size("Portrait 3:4", 512) == (448, 576)
    assert canvas_size("Tall 2:3", 512) == (448, 640)
    assert canvas_size("Wide 3:2", 64) == (80, 48)


def test_out_of_memory_becomes_advice_and_the_service_goes_on(service, astronaut, monkeypatch):
    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(PortraitBoothPipeline, "__call__", exhausted)
        with pytest.raises(gr.Error, match="fewer images or a smaller size"):
            service.generate(None, "a woman", steps=1, remembered_face=service.use_example()[3])
    gallery, info = service.generate(None, "a woman", steps=1, remembered_face=service.use_example()[3])
    assert len(gallery) == 1 and OUT_OF_MEMORY not in info


def test_stop_ends_the_generation_early(service, astronaut):
    request = SimpleNamespace(session_hash="abc")
    steps_seen = []

    def progress(done_total, **kwargs):
        steps_seen.append(done_total[0])
        if done_total[0] == 2:
            service.stop(request)

    gallery, info = service.generate(
        None, "a woman", steps=10, remembered_face=service.use_example()[3], request=request, progress=progress
    )
    assert (gallery, info) == ([], "Stopped.") and steps_seen == [1, 2]


def test_missing_face_and_limits(service):
    with pytest.raises(gr.Error, match="Upload a photo of your face first"):
        service.generate(None, "a woman", steps=1)
    with pytest.raises(gr.Error, match="between 1 and 4"):
        service.generate(None, "a woman", num_images=9)


def test_identity_hint_shows_the_word_that_gets_the_face(service):
    assert service.identity_hint("a photo of a woman in the snow", "woman", "", "happy") == (
        "The face goes to the highlighted word: a photo of a happy **woman** in the snow"
    )
    assert "did not" not in service.identity_hint("in the snow", "man", "", "none")
    assert service.identity_hint("in the snow", "man", "", "none").endswith("a photo of a **man**, in the snow")
    assert service.identity_hint("a girl", "custom", "", "none") == "Type the custom identity word."


def test_example_face_is_analysed(service):
    photo, preview, message, remembered = service.use_example()
    assert photo.size == (512, 512) and preview.size == (256, 256) and message.startswith("Face found")
    assert service.faces.get(remembered).features.shape == (1, tiny_pipe_feature_dim(service))


def tiny_pipe_feature_dim(service) -> int:
    return service.pipe.stea.config.identity_dim


def test_uploads_are_deleted_only_inside_the_upload_folder(tmp_path, monkeypatch, astronaut):
    uploads, elsewhere = tmp_path / "uploads", tmp_path / "mine"
    (uploads / "hash").mkdir(parents=True)
    elsewhere.mkdir()
    astronaut.save(uploads / "hash" / "me.png")
    astronaut.save(elsewhere / "me.png")
    monkeypatch.setattr(gr.utils, "get_upload_folder", lambda: str(uploads))
    first, kept = take(str(uploads / "hash" / "me.png")), take(str(elsewhere / "me.png"))
    assert first.data == kept.data and first.key == str(uploads / "hash" / "me.png")
    assert not (uploads / "hash" / "me.png").exists() and (elsewhere / "me.png").exists()
    assert take(str(uploads / "hash" / "me.png")).data is None  # taken: a second request finds no file


def test_the_same_upload_twice_is_read_once_and_then_remembered(service, tmp_path, monkeypatch, astronaut):
    (tmp_path / "h").mkdir()
    astronaut.save(tmp_path / "h" / "me.png")
    monkeypatch.setattr(gr.utils, "get_upload_folder", lambda: str(tmp_path))
    path = str(tmp_path / "h" / "me.png")
    gallery, info = service.generate_pair(path, path, "a photo of a man and a woman", steps=1)
    assert len(gallery) == 1 and not (tmp_path / "h" / "me.png").exists()
    assert service.detect_face(path)[1].startswith("Face found. (512×512 photo)")  # remembered, the file is gone


def test_pair_with_every_option_set(service, astronaut):
    gallery, info = service.generate_pair(
        None, None, "a photo of a woman and a man at a bar", identity_word_a="woman", expression_a="happy",
        identity_word_b="man", expression_b="sad", split=0.4, negative_prompt="blurry", num_images=2, seed=3,
        randomize_seed=False, steps=2, aspect="Wide 3:2", remembered_face_a=service.use_example()[3], remembered_face_b=service.use_example()[3],
    )  # fmt: skip
    assert len(gallery) == 2 and gallery[0][0].size == (80, 48) and gallery[1][1].startswith("seed 4 · 2 steps")
    assert "A: the first 'woman', x 0.00–0.40" in info and "B: the second 'man'" in info


def test_a_failed_upload_never_falls_back_to_the_previous_photo(service, tmp_path, monkeypatch, astronaut):
    uploads = tmp_path / "uploads"
    (uploads / "h").mkdir(parents=True)
    (uploads / "h" / "bad.png").write_bytes(b"not a picture")
    monkeypatch.setattr(gr.utils, "get_upload_folder", lambda: str(uploads))
    kept = service.use_example()[3]
    for _ in range(2):  # the first read deletes the file; the second must still fail, not use the example
        with pytest.raises(gr.Error, match="Could not read bad.png"):
            service.generate(str(uploads / "h" / "bad.png"), "a woman", steps=1, remembered_face=kept)


def test_empty_seed_without_random_is_a_clear_error(service, astronaut):
    with pytest.raises(gr.Error, match="Seed must be"):
        service.generate(
            None, "a woman", seed=None, randomize_seed=False, steps=1, remembered_face=service.use_example()[3]
        )


def test_face_memory_keeps_the_newest_within_its_bytes_and_forgets_after_its_lifetime(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("webui.faces.time.monotonic", lambda: clock[0])
    memory = FaceMemory(max_bytes=3 * (ENTRY_OVERHEAD + 5), ttl_seconds=60)
    for index in range(5):
        memory.put(f"k{index}", RefusedPhoto(f"bad {index}"))
    assert len(memory) == 3 and memory.get("k0") is None and memory.get("k2").message == "bad 2"
    assert memory.nbytes == 3 * (ENTRY_OVERHEAD + 5)
    clock[0] = 59.0
    assert memory.get("k3") is not None  # used: lives another 60 s
    clock[0] = 100.0
    assert memory.get("k4") is None and memory.get("k3") is not None and len(memory) == 1


def test_what_the_server_keeps_of_a_face_is_its_encoding(service, selfie):
    preview, message, key = service.detect_face(selfie)
    kept = service.faces.get(key)
    assert preview.size == (256, 256) and message == "Face found. (512×512 photo)"
    assert set(vars(kept)) == {"features", "embedding", "notice", "photo_size"}  # no picture among them
    assert kept.nbytes == kept.features.nbytes + kept.embedding.nbytes + ENTRY_OVERHEAD < 2 * ENTRY_OVERHEAD


@pytest.mark.parametrize("size", [(1, 60000), (60000, 1)])
def test_thin_images_get_a_sentence(service, size):
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, format="PNG")
    with pytest.raises(gr.Error, match=r"No face found in the \d+×\d+ image"):
        service.detect_face(buffer.getvalue())


def test_null_and_wrong_types_get_the_uis_sentences(service, selfie):
    kept = service.detect_face(selfie)[2]
    assert service.identity_hint("a girl", "custom", None, "none") == "Type the custom identity word."
    assert service.identity_hint(None, "woman", "", None).endswith("a photo of a **woman**")
    cases = [
        (dict(num_images="x"), "Number of images must be a whole number between 1 and 4."),
        (dict(steps=None), "Steps must be a whole number between 1 and 100."),
        (dict(guidance=[5]), "Guidance must be between 0 and 30."),
        (dict(seed="7", randomize_seed=False), "Seed must be a whole number from 0 up"),
        (dict(randomize_seed="yes"), "Randomize seed must be true or false."),
        (dict(identity_start={}), "identity_start must be between 0 and 1"),
        (dict(identity_word="custom", custom_word=None), "Type the custom identity word"),
        (dict(prompt=12), "Prompt must be text."),
    ]
    for change, sentence in cases:
        arguments = dict(face=None, prompt="a woman", steps=1, remembered_face=kept) | change
        with pytest.raises(gr.Error, match=sentence.replace("(", r"\(")):
            service.generate(**arguments)
    with pytest.raises(gr.Error, match="The photo must be an uploaded image file."):
        service.detect_face(123)
    with pytest.raises(gr.Error, match="between 0.2 and 0.8"):
        service.regions(None, "Square 1:1", "man", "woman")
    gallery, _ = service.generate(None, "a woman", negative_prompt=None, fast=None, steps=1, remembered_face=kept)
    assert len(gallery) == 1  # null where the UI sends an empty box or an unticked switch: as the UI
