"""Several photos of one person: a photo of someone else is flagged with a sentence and left out of the average."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance

from portrait.errors import NoFaceError, OptionError
from portrait.selfies import SAME_PERSON_THRESHOLD, check_photos, encode_checked, similarities_to_the_others


@pytest.fixture(scope="module")
def cameraman() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.camera()).convert("RGB")  # another real person, shipped by scikit-image


def test_similarity_to_the_others_is_the_cosine_with_their_mean():
    embeddings = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    first, second, third = similarities_to_the_others(embeddings)
    # others of row 0: (0, 1) + (0.7071, 0.7071) → direction (0.3827, 0.9239); cosine with (1, 0) = 0.3827
    assert first == pytest.approx(0.38268, abs=1e-5) and second == pytest.approx(0.38268, abs=1e-5)
    assert third == pytest.approx(1.0, abs=1e-6)
    assert check_photos(embeddings).flagged == [] and check_photos(embeddings, 0.5).flagged == [0, 1]
    assert similarities_to_the_others(embeddings[:1]) == [None]
    assert check_photos(embeddings[:2], 0.5).flagged == [1]  # two that differ: the main selfie stays


def test_a_photo_of_someone_else_is_flagged_and_left_out(tiny_pipe, astronaut, cameraman):
    brighter = ImageEnhance.Brightness(astronaut).enhance(1.2)
    encoding, check, analyses = encode_checked(tiny_pipe, [astronaut, brighter, cameraman])
    assert check.flagged == [2] and len(analyses) == 3 and len(encoding.analyses) == 2
    assert check.similarities[2] < SAME_PERSON_THRESHOLD < min(check.similarities[:2])
    (sentence,) = check.sentences()
    assert sentence.startswith("Photo 3 does not look like the same person as the others (identity similarity 0.")
    assert sentence.endswith(f"under {SAME_PERSON_THRESHOLD:.2f}): it was left out of the average.")
    same = tiny_pipe.encode_faces([astronaut, brighter])
    assert torch.allclose(encoding.features, same.features)  # the average of the two photos that match
    _, check, _ = encode_checked(tiny_pipe, [astronaut, brighter])
    assert check.flagged == [] and check.sentences() == []


def test_bad_photo_counts_and_faceless_photos_are_named(tiny_pipe, astronaut):
    with pytest.raises(OptionError, match="one to 4 photos"):
        encode_checked(tiny_pipe, [astronaut] * 5)
    with pytest.raises(NoFaceError, match="^Photo 2: No face found"):
        encode_checked(tiny_pipe, [astronaut, Image.new("RGB", (100, 100), "white")])


def test_app_previews_each_photo_and_flags_the_stranger(tiny_pipe, astronaut, cameraman, tmp_path):
    from webui.handlers import PortraitService
    from webui.selfies import SelfieChecks

    service = PortraitService(tiny_pipe, example=astronaut)
    paths = []
    for name, image in (("bright.png", ImageEnhance.Brightness(astronaut).enhance(1.2)), ("other.png", cameraman)):
        image.save(tmp_path / name)
        paths.append(str(tmp_path / name))
    *_, remembered = service.use_example()  # the session remembers the main selfie's encoding, not its photo
    gallery, note = SelfieChecks(service).check(None, paths, remembered_face=remembered)
    # the main selfie is previewed under its own upload; here each further photo is
    assert [caption for _, caption in gallery][0].startswith("photo 2")
    assert [caption.split(" · ")[-1] for _, caption in gallery] == ["kept", "left out"]
    assert note.startswith("Photo 3 does not look like the same person")
    _, info = service.generate(None, "a woman", steps=1, remembered_face=remembered, more_faces=paths, detailer=False)
    assert "Photo 3 does not look like the same person" in info
