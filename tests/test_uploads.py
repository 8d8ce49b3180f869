"""Uploaded files shared by several requests (webui/uploads.py): Gradio names an upload by its bytes, so every
request carrying the same photo names the same file. Each is served, and the file goes when the last has read it."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr
import pytest

from webui.handlers import PortraitService
from webui.uploads import CLAIMS, UploadClaims, one_request, take


@pytest.fixture
def uploads(tmp_path, monkeypatch):
    folder = tmp_path / "uploads"
    monkeypatch.setattr(gr.utils, "get_upload_folder", lambda: str(folder))
    return folder


@pytest.fixture
def photo(uploads, astronaut) -> str:
    (uploads / "hash").mkdir(parents=True)
    astronaut.save(uploads / "hash" / "me.png")
    return str(uploads / "hash" / "me.png")


def test_a_file_named_by_two_requests_stays_until_the_second_has_read_it(photo):
    first, second = object(), object()
    CLAIMS.claim(first, [photo])
    CLAIMS.claim(second, [photo])
    with one_request(first):
        assert take(photo).data is not None
    assert CLAIMS.claims(photo) == 1 and Path(photo).exists()  # the second request has not read it yet
    with one_request(second):
        assert take(photo).data is not None
    assert CLAIMS.claims(photo) == 0 and not Path(photo).exists() and len(CLAIMS) == 0


def test_one_request_naming_a_file_twice_reads_it_once(photo):
    owner = object()
    CLAIMS.claim(owner, [photo, photo])
    assert CLAIMS.claims(photo) == 1  # claims are per request
    with one_request(owner):
        once = take(photo)
        assert not Path(photo).exists()  # deleted at the first read: nobody else names it
        assert take(photo) is once  # the control picture, the photo to edit: the same bytes
    assert take(photo).data is None  # another request finds no file


def test_a_request_that_ends_without_reading_leaves_the_file_to_the_one_still_waiting(photo):
    refused, waiting = object(), object()
    CLAIMS.claim(refused, [photo])
    CLAIMS.claim(waiting, [photo])
    CLAIMS.release(refused)  # the queue was full, or it was cancelled
    assert Path(photo).exists()
    CLAIMS.release(waiting)  # it ended too, whatever ended it
    assert not Path(photo).exists() and len(CLAIMS) == 0


def test_claims_delete_only_files_in_the_upload_folder(uploads, tmp_path, astronaut):
    mine = tmp_path / "mine.png"
    astronaut.save(mine)
    (uploads / "folder").mkdir(parents=True)
    claims, owner = UploadClaims(), object()
    claims.claim(owner, [mine, uploads / "folder", uploads / "never-uploaded.png"])
    claims.release(owner)  # a folder or a missing file named as an upload: nothing to delete, no error
    assert mine.exists() and (uploads / "folder").is_dir() and len(claims) == 0


def test_claims_from_many_threads_balance(uploads):
    (uploads / "h").mkdir(parents=True)
    paths = [uploads / "h" / f"{index}.png" for index in range(8)]
    for path in paths:
        path.write_bytes(b"x")
    claims = UploadClaims()

    def request() -> None:
        for _ in range(200):
            owner = object()
            claims.claim(owner, paths[:4])
            claims.release(owner, paths[0])
            claims.release(owner)

    keeper = object()
    claims.claim(keeper, paths)  # holds every file while the threads come and go
    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(path.exists() for path in paths) and [claims.claims(path) for path in paths] == [1] * 8
    claims.release(keeper)
    assert not any(path.exists() for path in paths) and len(claims) == 0


def test_the_selfie_as_face_and_control_picture_in_one_request(tiny_pipe, astronaut, photo):
    service = PortraitService(tiny_pipe, example=astronaut, random_controlnets=True)
    owner = object()
    CLAIMS.claim(owner, [photo])
    with one_request(owner):
        gallery, _ = service.generate(take(photo), "a photo of a woman", steps=1, control_image=photo, detailer=False)
    assert len(gallery) == 1 and "canny control" in gallery[0][1] and not Path(photo).exists()
