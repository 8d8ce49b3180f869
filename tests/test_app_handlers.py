"""The app's request handlers, called directly (no server): the parts a browser cannot easily provoke."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest
import torch

from portrait.pipeline import PortraitBoothPipeline
from webui.errors import OUT_OF_MEMORY
from webui.handlers import PortraitService, canvas_size
from webui.uploads import UploadReader


@pytest.fixture
def service(tiny_pipe, astronaut):
    return PortraitService(tiny_pipe, example=astronaut)


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
            service.generate(None, "a woman", steps=1, remembered_face=astronaut)
    gallery, info = service.generate(None, "a woman", steps=1, remembered_face=astronaut)
    assert len(gallery) == 1 and OUT_OF_MEMORY not in info


def test_stop_ends_the_generation_early(service, astronaut):
    request = SimpleNamespace(session_hash="abc")
    steps_seen = []

    def progress(done_total, **kwargs):
        steps_seen.append(done_total[0])
        if done_total[0] == 2:
            service.stop(request)

    gallery, info = service.generate(None, "a woman", steps=10, remembered_face=astronaut, request=request, progress=progress)
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


def test_uploads_are_deleted_only_inside_the_upload_folder(tmp_path, monkeypatch, astronaut):
    uploads, elsewhere = tmp_path / "uploads", tmp_path / "mine"
    (uploads / "hash").mkdir(parents=True)
    elsewhere.mkdir()
    astronaut.save(uploads / "hash" / "me.png")
    astronaut.save(elsewhere / "me.png")
    monkeypatch.setattr(gr.utils, "get_upload_folder", lambda: str(uploads))
    reader = UploadReader()
    first, again, kept = reader.read([str(uploads / "hash" / "me.png"), str(uploads / "hash" / "me.png"), str(elsewhere / "me.png")])
    assert first is again and first.size == kept.size == (512, 512)
    assert not (uploads / "hash").exists() and (elsewhere / "me.png").exists()
    assert reader.read([str(uploads / "hash" / "me.png")])[0] is first  # in memory a while, never on disk


def test_pair_with_every_option_set(service, astronaut):
    gallery, info = service.generate_pair(
        None, None, "a photo of a woman and a man at a bar", identity_word_a="woman", expression_a="happy",
        identity_word_b="man", expression_b="sad", split=0.4, negative_prompt="blurry", num_images=2, seed=3,
        randomize_seed=False, steps=2, aspect="Wide 3:2", remembered_face_a=astronaut, remembered_face_b=astronaut,
    )  # fmt: skip
    assert len(gallery) == 2 and gallery[0][0].size == (80, 48) and gallery[1][1].startswith("seed 4 · 2 steps")
    assert "A: the first 'woman', x 0.00–0.40" in info and "B: the second 'man'" in info


def test_a_failed_upload_never_falls_back_to_the_previous_photo(tmp_path, monkeypatch, astronaut):
    from portrait.errors import InvalidImageError

    uploads = tmp_path / "uploads"
    (uploads / "h").mkdir(parents=True)
    (uploads / "h" / "bad.png").write_bytes(b"not a picture")
    monkeypatch.setattr(gr.utils, "get_upload_folder", lambda: str(uploads))
    reader = UploadReader()
    for _ in range(2):  # the first read deletes the file; the second must still fail, not return None
        with pytest.raises(InvalidImageError):
            reader.read([str(uploads / "h" / "bad.png")])


def test_empty_seed_without_random_is_a_clear_error(service, astronaut):
    with pytest.raises(gr.Error, match="Seed must be"):
        service.generate(None, "a woman", seed=None, randomize_seed=False, steps=1, remembered_face=astronaut)
