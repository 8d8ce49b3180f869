"""The evaluation harness: matching, metrics, and a whole tiny run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from evaluation.harness import main
from evaluation.metrics import MetricModels, geometric_mean, greedy_match, harmonic_mean, id_p, pair_score


def test_greedy_matching_takes_the_best_pair_first():
    similarity = np.array([[0.9, 0.8], [0.85, 0.1]])
    # best pair (0, 0) = 0.9 first; face 1 is left with reference 1 = 0.1, though 0.85 + 0.8 would be larger
    assert greedy_match(similarity) == [(0, 0, 0.9), (1, 1, 0.1)]
    assert pair_score(similarity, 2) == 0.1


def test_greedy_matching_ties_and_missing_faces():
    assert greedy_match(np.array([[0.5, 0.5], [0.5, 0.5]])) == [(0, 0, 0.5), (1, 1, 0.5)]
    one_face = np.array([[0.2, 0.7]])
    assert greedy_match(one_face) == [(0, 1, 0.7)] and pair_score(one_face, 2) == 0.0  # reference 0 unmatched
    three_faces = np.array([[0.1, 0.2], [0.6, 0.3], [0.4, 0.9]])  # largest first
    assert greedy_match(three_faces) == [(2, 1, 0.9), (1, 0, 0.6)]
    assert pair_score(three_faces, 2) == 0.6  # every face takes part: (2, 1) = 0.9, then (1, 0) = 0.6; the worse is 0.6
    assert pair_score(np.array([[-0.4, -0.1], [-0.2, -0.3]]), 2) == 0.0  # a negative worst match counts as 0
    assert greedy_match(np.zeros((0, 2))) == [] and pair_score(np.zeros((0, 2)), 2) == 0.0


def test_default_prompts_hold_the_papers_four_groups_and_the_pairs():
    from evaluation.protocols import DEFAULT_PROMPTS, SINGLE_GROUPS

    prompts = json.loads(DEFAULT_PROMPTS.read_text())
    assert SINGLE_GROUPS == ("accessory", "style", "action", "context")
    assert [len(prompts[group]) for group in SINGLE_GROUPS] == [10, 10, 10, 10] and len(prompts["multi"]) == 21
    assert all("{subject}" in prompt for group in SINGLE_GROUPS for prompt in prompts[group])


def test_combined_scores_by_hand():
    assert id_p(0.6, 0.25) == 0.6 and id_p(0.6, 0.2) == 0.0
    assert harmonic_mean(0.6, 0.3) == pytest.approx(0.4) and geometric_mean(0.5, 0.32) == pytest.approx(0.4)


@pytest.fixture(scope="module")
def metrics():
    return MetricModels.tiny()


def test_id_pres_of_an_image_with_itself_is_one_and_zero_without_a_face(metrics, astronaut):
    reference = metrics.faces(astronaut)[0]
    assert metrics.identity(astronaut, reference) == (pytest.approx(1.0, abs=1e-5), True)
    assert metrics.identity(Image.new("RGB", (256, 256), "gray"), reference) == (0.0, False)


@pytest.mark.slow
def test_whole_harness_on_a_tiny_run(tmp_path, astronaut):
    subjects = tmp_path / "subjects"
    subjects.mkdir()
    astronaut.save(subjects / "eileen.png")
    ImageOps.grayscale(ImageOps.mirror(astronaut)).convert("RGB").save(subjects / "mirror.png")
    (subjects / "subjects.json").write_text(json.dumps({"eileen.png": "woman", "mirror.png": "man"}))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"style": ["an oil painting of {subject}", "a pencil sketch of {subject}"],
                                   "multi": ["a photo of {subject_a} and {subject_b} at a bar"]}))  # fmt: skip
    run = tmp_path / "run"
    common = ["--subjects", str(subjects), "--out", str(run), "--prompts", str(prompts), "--images-per-prompt", "1"]
    main(["generate", *common, "--tiny", "--steps", "2", "--protocols", "single,multi"])
    images = sorted(p.relative_to(run).as_posix() for p in run.rglob("*.png"))
    assert len(images) == 2 * 2 + 1 and "images/multi/eileen+mirror/multi-00-0.png" in images
    main(["generate", *common, "--tiny", "--steps", "2", "--protocols", "single,multi"])  # nothing to redo
    rows = main(["score", "--run", str(run), "--tiny"])
    with (run / "scores.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(rows) == 5
    table = (run / "table.md").read_text()
    assert "| Method | Protocol | Images | Id Pres | CLIP-TI | ID(P) | HM | GM |" in table
    assert "| portraitbooth | single | 4 |" in table and "| portraitbooth | multi | 1 |" in table
    again = main(["score", "--run", str(run), "--tiny"])  # scored images are read back, not rescored
    assert [row["file"] for row in again] == [row["file"] for row in rows] and (run / "table.md").read_text() == table
