"""CelebV-Text preparation on a mini dataset the tests write (videos made with OpenCV)."""

from __future__ import annotations

import json

import pytest

from train.celebvt_text import AnnotationCaptioner, emotion_sequence, expression_at, subject_word
from train.config import TrainConfig
from train.data_format import read_manifest
from train.dataset import Draw, PortraitDataset
from train.prepare_celebvt import main

from celebvt_fixture import make_mini_celebvt

EXPECTED_SKIPS = {"unreadable": 1, "no_face": 1, "several_faces": 1, "face_too_small": 1, "unknown_subject_word": 1}


@pytest.mark.parametrize(
    ("text", "sequence"),
    [
        ("neutral, happy", ["neutral", "happy"]),
        ("The person is surprised at first and then sad.", ["surprised", "sad"]),
        ("happiness,happiness,anger", ["happy", "angry"]),
        ("She shows contempt, then disgust and fear.", ["contemptuous", "disgusted", "fearful"]),
        ("He smiles and laughs; calm afterwards.", ["smiling", "laughing", "neutral"]),
        ("The lighting is warm.", []),
    ],
)
def test_emotion_words(text, sequence):
    assert emotion_sequence(text) == sequence


def test_expression_follows_the_target_frame():
    texts = {"emotion": "neutral, then happy"}
    assert expression_at(texts, at_end=False) == "neutral" and expression_at(texts, at_end=True) == "happy"
    assert expression_at({}, at_end=True) is None


@pytest.mark.parametrize(
    ("appearance", "word"),
    [
        ("The woman has long hair. She wears earrings.", "woman"),
        ("He has a beard and his hair is short.", "man"),
        ("A young lady.", "woman"),
        ("A person with glasses.", None),
    ],
)
def test_subject_word(appearance, word):
    assert subject_word({"face40_details_new": appearance}).word == word


@pytest.mark.parametrize(
    ("appearance", "caption"),
    [
        ("The woman has long hair. She smiles.", "a photo of a woman who has long hair"),
        ("He is young and has black hair.", "a photo of a man who is young and has black hair"),
        ("This young man has a beard.", "a photo of a man who has a beard"),
        ("A gentleman with short hair.", "a photo of a man with short hair"),
        ("Short hair and glasses.", "a photo of a man, short hair and glasses"),
        ("", "a photo of a man"),
    ],
)
def test_annotation_captions_name_the_subject_once(appearance, caption):
    word = "woman" if "woman" in appearance else "man"
    assert AnnotationCaptioner().caption(None, {"face40_details_new": appearance}, word) == caption


@pytest.fixture(scope="module")
def celebvt(tmp_path_factory, astronaut):
    return make_mini_celebvt(tmp_path_factory.mktemp("celebvt"), astronaut)


def run(celebvt, out, *extra):
    return main(["--celebvt", str(celebvt), "--out", str(out), "--mask", "landmarks", "--detector", "mtcnn", *extra])


@pytest.mark.slow
def test_prepares_kept_rows_and_lists_skips(celebvt, tmp_path, tiny_pipe, capsys):
    summary = run(celebvt, tmp_path / "out")
    assert summary["kept"] == 2 and summary["skipped"] == EXPECTED_SKIPS
    assert summary["unreadable_or_failed"] == ["broken"] and summary["identity_words"] == {"woman": 2}
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert (
        "kept 2; skipped: face_too_small 1, no_face 1, several_faces 1, unknown_subject_word 1, unreadable 1"
        in capsys.readouterr().out
    )
    samples = {sample.id: sample for sample in read_manifest(tmp_path / "out")}
    smiling = samples["woman_smiling"]
    at_end = smiling.meta["target_frame"] == "last"
    assert smiling.expression == ("happy" if at_end else "neutral")
    assert smiling.caption.startswith(f"a photo of a {smiling.expression} woman who has short brown hair")
    assert smiling.caption[slice(*smiling.identity_span)] == "woman" and len(smiling.landmarks) == 5
    dataset = PortraitDataset(tmp_path / "out", tiny_pipe.tokenizer, TrainConfig.load("train/configs/tiny.yaml"))
    for index in range(len(dataset)):
        item = dataset[Draw(index, index)]
        assert item["pixel_values"].shape == (3, 64, 64) and item["reference"].shape == (3, 112, 112)


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_manifest(celebvt, tmp_path):
    run(celebvt, tmp_path / "whole")
    run(celebvt, tmp_path / "resumed", "--limit", "3")  # as if killed after three videos
    partial = read_manifest(tmp_path / "resumed") if (tmp_path / "resumed" / "manifest.jsonl").exists() else []
    run(celebvt, tmp_path / "resumed", "--workers", "2")
    whole = sorted((s.id, s.caption, s.landmarks) for s in read_manifest(tmp_path / "whole"))
    resumed = sorted((s.id, s.caption, s.landmarks) for s in read_manifest(tmp_path / "resumed"))
    assert whole == resumed and len(partial) < len(whole)
    manifest = (tmp_path / "resumed" / "manifest.jsonl").read_bytes()
    assert run(celebvt, tmp_path / "resumed")["kept"] == 2  # a finished set: nothing is redone
    assert (tmp_path / "resumed" / "manifest.jsonl").read_bytes() == manifest
    assert not list((tmp_path / "resumed").rglob("*.tmp"))


@pytest.mark.slow
def test_shards_split_the_videos_without_overlap(celebvt, tmp_path):
    first = run(celebvt, tmp_path / "sharded", "--shard", "0/2")
    both = run(celebvt, tmp_path / "sharded", "--shard", "1/2")
    assert (
        both["kept"] == 2 and sum(both["skipped"].values()) == 5 and first["kept"] + sum(first["skipped"].values()) < 7
    )
    assert sorted(p.name for p in (tmp_path / "sharded").glob("manifest*")) != []


@pytest.mark.slow
def test_a_plugged_in_captioner_is_used_and_the_subject_word_added(celebvt, tmp_path):
    run(celebvt, tmp_path / "plugged", "--captioner", "celebvt_fixture:ShoutingCaptioner")
    sample = next(s for s in read_manifest(tmp_path / "plugged") if s.id == "woman_smiling")
    assert sample.meta["caption_source"] == "shouting"
    assert sample.caption.endswith("A 256-PIXEL PHOTO OF SOMEONE SMILING") and "woman" in sample.caption
    assert sample.caption[slice(*sample.identity_span)] == "woman"


def test_a_line_cut_by_a_kill_does_not_swallow_the_next(tmp_path):
    from train.data_format import append_jsonl, read_jsonl

    path = tmp_path / "manifest.jsonl"
    append_jsonl(path, {"clip_id": "a"})
    with open(path, "a") as handle:
        handle.write('{"clip_id": "b", "rea')  # killed mid-line
    append_jsonl(path, {"clip_id": "c"})
    assert [row["clip_id"] for row in read_jsonl([path])] == ["a", "c"]
