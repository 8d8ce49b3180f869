"""The drawn-people world of the learning experiment: deterministic, split cleanly, readable by training."""

from __future__ import annotations

import numpy as np
import pytest

from portrait.presets import tiny_tokenizer
from train.config import TrainConfig
from experiments.drawn_people.runner import RECIPE
from train.data_format import read_manifest
from train.dataset import Draw, PortraitDataset
from experiments.drawn_people.world import EXPRESSIONS, DrawnPeopleConfig, draw_frame, split_people, write_drawn_people

SMALL = DrawnPeopleConfig(size=32, train_people=6, heldout_people=4, frames_per_person=3, seed=3)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("drawn")
    return root, *write_drawn_people(root, SMALL)


def test_same_seed_same_pictures_other_seed_other_people(tmp_path, written):
    root, train, _ = written
    again = write_drawn_people(tmp_path / "again", SMALL)[0]
    for sample in read_manifest(train):
        assert (train / sample.image).read_bytes() == (again / sample.image).read_bytes()
    assert split_people(SMALL) == split_people(SMALL)
    assert split_people(SMALL)[1] != split_people(DrawnPeopleConfig(heldout_people=4, seed=4))[1]


def test_heldout_people_never_appear_in_training_and_are_told_apart(written):
    _, train, heldout = written
    train_people = {tuple(s.meta["traits"]) for s in read_manifest(train)}
    heldout_people = {tuple(s.meta["traits"]) for s in read_manifest(heldout)}
    assert len(train_people) == 6 and len(heldout_people) == 4 and not train_people & heldout_people
    traits = np.array(sorted(heldout_people))
    differ = (traits[:, None] != traits[None]).sum(-1)
    assert differ[~np.eye(4, dtype=bool)].min() >= SMALL.min_heldout_distance
    assert sorted(t[0] for t in heldout_people) == [0, 0, 1, 1]  # half men, half women


def test_references_show_another_expression_and_captions_name_both_words(written):
    _, train, heldout = written
    for sample in read_manifest(train) + read_manifest(heldout):
        assert sample.meta["reference_expression"] != sample.expression
        assert sample.caption[slice(*sample.identity_span)] == sample.identity_word in ("man", "woman")
        assert sample.caption[slice(*sample.expression_span)] == sample.expression
    assert [s.expression for s in read_manifest(heldout)][:4] == list(EXPRESSIONS)  # every expression once per person


def test_landmarks_sit_on_the_face_and_expressions_change_the_mouth():
    from experiments.drawn_people.world import Person

    person = Person(sex=1, hair_style=0, skin=2, hair_colour=1, face_width=1)
    frames = {e: draw_frame(person, e, np.random.default_rng(0), 64) for e in EXPRESSIONS}
    for frame in frames.values():
        mask = np.asarray(frame.mask) > 0
        for x, y in frame.landmarks.round().astype(int):
            assert mask[y, x]
        left_eye, right_eye = frame.landmarks[:2]
        assert left_eye[0] < right_eye[0] and abs(left_eye[1] - right_eye[1]) < 0.5
    mouths = {e: np.asarray(f.image)[38:52, 20:44].astype(int) for e, f in frames.items()}
    assert all(np.abs(mouths[a] - mouths[b]).mean() > 3 for a in EXPRESSIONS for b in EXPRESSIONS if a < b)


def test_the_written_set_loads_through_the_training_reader(written):
    _, train, _ = written
    config = TrainConfig.load(RECIPE, unconditional_fraction=0.0, text_only_fraction=0.0)
    tokenizer = tiny_tokenizer(16)
    item = PortraitDataset(train, tokenizer, config)[Draw(0, 1)]
    assert item["pixel_values"].shape == (3, 32, 32) and item["reference"].shape == (3, 112, 112)
    tokens = tokenizer.convert_ids_to_tokens(item["input_ids"].tolist())
    assert tokens[int(item["identity_token"])].removesuffix("</w>") in ("man", "woman")
    assert tokens[int(item["expression_token"])].removesuffix("</w>") in EXPRESSIONS
