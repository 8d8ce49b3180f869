"""The drawn-people world of the learning experiment: deterministic, split cleanly, readable by training."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from experiments.drawn_people.runner import RECIPE
from experiments.drawn_people.world import (
    EXPRESSIONS,
    HAIR_COLOURS,
    HELDOUT_GROUPS,
    SKIN_TONES,
    TRAITS,
    DrawnPeopleConfig,
    draw_frame,
    split_people,
    write_drawn_people,
)
from portrait.presets import tiny_tokenizer
from train.config import TrainConfig
from train.data_format import read_manifest
from train.dataset import Draw, PortraitDataset

SMALL = DrawnPeopleConfig(
    size=32, train_people=6, heldout_people=4, novel_people=4, validation_people=4, frames_per_person=3, seed=3
)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("drawn")
    return root, write_drawn_people(root, SMALL)


def traits_in(folder) -> set[tuple[int, ...]]:
    return {tuple(s.meta["traits"]) for s in read_manifest(folder)}


def test_same_seed_same_pictures_other_seed_other_people(tmp_path, written):
    root, sets = written
    again = write_drawn_people(tmp_path / "again", SMALL)["train"]
    for sample in read_manifest(sets["train"]):
        assert (sets["train"] / sample.image).read_bytes() == (again / sample.image).read_bytes()
    assert split_people(SMALL) == split_people(SMALL)
    assert split_people(SMALL).test != split_people(dataclasses.replace(SMALL, seed=4)).test


def test_heldout_people_never_appear_in_training_and_are_told_apart(written):
    _, sets = written
    train = traits_in(sets["train"])
    groups = {name: traits_in(sets[name]) for name in HELDOUT_GROUPS}
    assert len(train) == 6 and all(len(people) == 4 for people in groups.values())
    assert not any(train & people for people in groups.values())
    assert not groups["test"] & groups["validation"] and not groups["test"] & groups["novel"]
    for name, people in groups.items():
        traits = np.array(sorted(people))
        differ = (traits[:, None] != traits[None]).sum(-1)
        apart = SMALL.min_heldout_distance - (name == "novel")  # novel people all share their novel value
        assert differ[~np.eye(4, dtype=bool)].min() >= apart
        assert sorted(t[0] for t in people) == [0, 0, 1, 1]  # half men, half women


@pytest.mark.parametrize("seed", range(5))
def test_every_split_seed_keeps_test_people_and_the_novel_value_out_of_training(seed):
    """Per split seed of the full and quick experiment: no held-out person is a training person, and the
    novel trait value is in no training person (so in no training frame or reference), only in the novel group."""
    from experiments.drawn_people.runner import FULL, QUICK

    for scale in (FULL, QUICK):
        split = split_people(dataclasses.replace(scale.people, seed=seed))
        trait, value = split.novel_trait
        assert trait in ("skin", "hair_colour") and 0 <= value < TRAITS[trait]
        assert len(split.train) == scale.people.train_people
        for group in HELDOUT_GROUPS:
            assert not set(split.group(group)) & set(split.train)
        assert all(getattr(person, trait) != value for person in split.train + split.test + split.validation)
        assert all(getattr(person, trait) == value for person in split.novel)


def test_the_novel_value_is_absent_from_every_training_frame(written):
    _, sets = written
    trait, value = split_people(SMALL).novel_trait
    column = list(TRAITS).index(trait)
    samples = read_manifest(sets["train"])
    assert samples and all(s.meta["traits"][column] != value for s in samples)
    assert all(s.meta["traits"][column] == value for s in read_manifest(sets["novel"]))
    # and the pixels agree: novel people are drawn in the novel colour, training people never
    colour = np.array((SKIN_TONES if trait == "skin" else HAIR_COLOURS)[value])

    def pixels_of_that_colour(people) -> int:
        frames = [
            np.asarray(draw_frame(p, "neutral", np.random.default_rng(0), 64).image).reshape(-1, 3) for p in people
        ]
        return int(sum((np.abs(frame.astype(int) - colour).max(axis=1) <= 2).sum() for frame in frames))

    assert (
        pixels_of_that_colour(split_people(SMALL).novel) > 100 and pixels_of_that_colour(split_people(SMALL).train) == 0
    )


def test_evaluation_references_are_balanced_over_expressions(written):
    from experiments.drawn_people.heldout import heldout_people

    _, sets = written
    people = heldout_people(sets["test"])
    assert [p.expression for p in people] == list(EXPRESSIONS)  # person n shows expression n mod 4


def test_references_show_another_expression_and_captions_name_both_words(written):
    _, sets = written
    for sample in read_manifest(sets["train"]) + read_manifest(sets["test"]):
        assert sample.meta["reference_expression"] != sample.expression
        assert sample.caption[slice(*sample.identity_span)] == sample.identity_word in ("man", "woman")
        assert sample.caption[slice(*sample.expression_span)] == sample.expression
    assert [s.expression for s in read_manifest(sets["test"])][:4] == list(
        EXPRESSIONS
    )  # every expression once per person


def test_landmarks_sit_on_the_face_and_expressions_change_the_mouth():
    from experiments.drawn_people.world import DrawnIdentity

    person = DrawnIdentity(sex=1, hair_style=0, skin=2, hair_colour=1, face_width=1)
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
    _, sets = written
    config = TrainConfig.load(RECIPE, unconditional_fraction=0.0, text_only_fraction=0.0)
    tokenizer = tiny_tokenizer(16)
    item = PortraitDataset(sets["train"], tokenizer, config)[Draw(0, 1)]
    assert item["pixel_values"].shape == (3, 16, 16) and item["reference"].shape == (3, 112, 112)
    tokens = tokenizer.convert_ids_to_tokens(item["input_ids"].tolist())
    assert tokens[int(item["identity_token"])].removesuffix("</w>") in ("man", "woman")
    assert tokens[int(item["expression_token"])].removesuffix("</w>") in EXPRESSIONS
