"""The learning experiment: its statistics on hand-made judgements, its stand-ins, its fingerprints, and the
quick run end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.drawn_people import runner
from experiments.drawn_people.heldout import (
    EvalSettings,
    HeldOutPerson,
    Judgement,
    PairJudgement,
    chance_levels,
    pairs_of,
    seed_interval,
    sign_flip_p,
    summarize_pairs,
    summarize_single,
)
from experiments.drawn_people.measurer import TraitReader
from experiments.drawn_people.report import LABELS
from experiments.drawn_people.stages import Scale
from experiments.drawn_people.standins import Schedule, train_autoencoder
from experiments.drawn_people.world import DrawnPeopleConfig


def judgement(**columns) -> Judgement:
    return Judgement(**{name: np.asarray(values) for name, values in columns.items()})


def test_measures_of_a_hand_made_judgement_are_per_person():
    # 2 people, 4 images: person 0 asked happy(0) twice, person 1 asked sad(1) and neutral(3); references show 2 and 3.
    j = judgement(
        person=[0, 0, 1, 1],
        asked=[0, 0, 1, 3],
        reference_expression=[2, 2, 3, 3],
        identified=[0, 1, 1, 1],  # person 0: 1 of 2 right, person 1: 2 of 2
        similarity=[0.9, 0.5, 0.8, 0.6],
        read_expression=[0, 2, 3, 3],  # right, leaked; leaked (counts), asked its own reference (not a leak ask)
    )
    summary = summarize_single(j)
    assert summary["per_person"]["id_acc"] == [0.5, 1.0] and summary["id_acc"] == 0.75
    assert summary["per_person"]["id_sim"] == [0.7, 0.7] and summary["id_sim"] == 0.7
    assert summary["per_person"]["expr_acc"] == [0.5, 0.5]
    assert summary["per_person"]["expr_leak"] == [0.5, 1.0]  # person 1: only the sad ask can leak
    assert summary["images"] == 4 and "id_p_value" not in summary  # no image-level binomial


def test_chance_levels_are_computed_from_the_group_and_the_asks():
    people = [
        HeldOutPerson(i, word, torch.zeros(3), torch.zeros(3), "happy")
        for i, word in enumerate(["man", "man", "woman"])
    ]
    j = judgement(person=[0, 1, 2, 2], asked=[0, 1, 2, 2], reference_expression=[1] * 4, identified=[0] * 4,
                  similarity=[0.0] * 4, read_expression=[0] * 4)  # fmt: skip
    chance = chance_levels(people, j)
    assert chance["identification"] == round(1 / 3, 4)
    assert chance["word_only_ceiling_per_person"] == [0.5, 0.5, 1.0]  # a lone woman is found from the word alone
    assert chance["word_only_ceiling"] == round(2 / 3, 4)
    assert chance["expression_best_constant"] == 0.5  # "surprised" is asked in half the images


def test_sign_flip_test_enumerates_every_sign_pattern():
    # 3 people, all better by 1: only the all-plus pattern reaches the observed mean → p = 1/8
    assert sign_flip_p(np.array([1.0, 1.0, 1.0])) == 1 / 8
    # differences 2, -1: patterns (+,+)=0.5, (+,-)=1.5, (-,+)=-1.5, (-,-)=-0.5; observed 0.5 → 2 of 4
    assert sign_flip_p(np.array([2.0, -1.0])) == 0.5
    assert sign_flip_p(np.zeros(4)) == 1.0  # no difference: no evidence
    many = sign_flip_p(np.ones(40), draws=999, seed=1)
    assert many == pytest.approx(1 / 1000)  # beyond 16 people: random patterns, the observed one counted


def test_seed_interval_is_a_t_interval_over_seeds():
    mean, low, high = seed_interval([0.5, 0.7])
    # mean 0.6, sd 0.1414, t(0.975, 1) = 12.706: half width 12.706 · 0.1414 / √2 = 1.2706
    assert (
        mean == pytest.approx(0.6)
        and high - mean == pytest.approx(1.27062, rel=1e-4)
        and mean - low == pytest.approx(high - mean)
    )
    assert seed_interval([0.3, 0.3, 0.3]) == (pytest.approx(0.3), pytest.approx(0.3), pytest.approx(0.3))


def test_pairs_put_a_man_and_a_woman_in_both_orders():
    people = [
        HeldOutPerson(i, word, torch.zeros(3), torch.zeros(3), "happy")
        for i, word in enumerate(["man", "woman", "man", "woman"])
    ]
    assert [(a.index, b.index) for a, b in pairs_of(people)] == [(0, 1), (1, 0), (2, 3), (3, 2)]


def test_two_people_measures_per_half_and_the_cost_ratio():
    j = PairJudgement(
        person=np.array([0, 1, 1, 0]),
        partner=np.array([1, 0, 0, 1]),
        asked=np.array([0, 1, 2, 3]),
        identified=np.array([0, 0, 1, 2]),  # person 0: right then wrong (not a swap); person 1: swapped, then right
        read_expression=np.array([0, 0, 2, 3]),
        seconds=6.0, pictures=2, one_person_seconds=2.0, one_person_pictures=2,
    )  # fmt: skip
    summary = summarize_pairs(j)
    assert summary["per_person"]["right_person"] == [0.5, 0.5] and summary["per_person"]["swapped"] == [0.0, 0.5]
    assert summary["per_person"]["expr_acc"] == [1.0, 0.5] and summary["cost_ratio"] == 3.0


def test_autoencoder_stand_in_learns_and_scales_its_latents():
    from portrait.presets import build_random_components

    vae = build_random_components("drawn")["vae"]
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        before = float(torch.nn.functional.mse_loss(vae.decode(vae.encode(x).latent_dist.mode()).sample, x))
    after = train_autoencoder(vae, x, torch.ones(4, 1, 16, 16), Schedule(60, 3e-3, batch_size=4))
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor
    assert after < before and latents.std().item() == pytest.approx(1.0, rel=1e-3)
    assert not any(p.requires_grad for p in vae.parameters())  # frozen afterwards, as the pretrained VAE is


def test_trait_reader_reads_each_trait_and_the_expression():
    reader = TraitReader({"sex": 2, "skin": 5}, expressions=4)
    traits, expression = reader(torch.zeros(3, 3, 32, 32))
    assert [t.shape for t in traits.values()] == [(3, 2), (3, 5)] and expression.shape == (3, 4)
    vector, read = reader.read(torch.zeros(3, 3, 32, 32))
    assert vector.shape == (3, 7) and torch.allclose(vector.norm(dim=-1), torch.ones(3))
    assert torch.allclose(read.sum(-1), torch.ones(3))


def test_runs_use_the_projects_ablation_recipes():
    assert runner.run_overrides("full") == {}
    assert runner.run_overrides("no_face") == {"text_only_fraction": 1.0}
    assert runner.run_overrides("no_dip") == {"identity_weight": 0.0}
    assert runner.run_overrides("no_ecac") == {"localization_weight": 0.0}
    # the paper's w/o STEA: CLIP image features fused by STEA, the CLIP encoder trained (its tiny architecture here)
    assert runner.run_overrides("no_stea") == {"fusion_encoder": "clip_tiny", "train_fusion_encoder": True}


def test_a_changed_recipe_reruns_and_a_foreign_folder_is_refused(tmp_path, monkeypatch):
    from portrait.errors import OptionError

    folder = tmp_path / "seed-0"
    stamp = runner.fingerprint(runner.QUICK, 0)
    runner.claim(folder, stamp)
    (folder / "measurer.safetensors").write_text("a result")
    runner.claim(folder, runner.fingerprint(runner.QUICK, 0))  # same recipe, code and settings: kept
    assert (folder / "measurer.safetensors").is_file()
    assert len(json.loads((folder / "code_version.json").read_text())["commit"]) == 40  # the commit that made it
    changed = tmp_path / "recipe.yaml"
    changed.write_text(runner.RECIPE.read_text().replace("learning_rate: 2.0e-3", "learning_rate: 1.0e-3"))
    monkeypatch.setattr(runner, "RECIPE", changed)
    assert runner.fingerprint(runner.QUICK, 0) != stamp
    with pytest.raises(OptionError, match="made by another recipe"):  # the demo's export refuses, keeps the runs
        runner.claim(folder, runner.fingerprint(runner.QUICK, 0), rerun_stale=False)
    assert (folder / "measurer.safetensors").is_file()
    runner.claim(folder, runner.fingerprint(runner.QUICK, 0))  # another recipe: the old results go
    assert not (folder / "measurer.safetensors").exists()
    assert json.loads((folder / "fingerprint.json").read_text()) == runner.fingerprint(runner.QUICK, 0)
    other_steps = dataclasses.replace(runner.QUICK, run_steps=301)
    assert runner.fingerprint(other_steps, 0) != runner.fingerprint(runner.QUICK, 0)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OptionError, match="without a fingerprint"):
        runner.claim(foreign, stamp)


@pytest.mark.slow
def test_quick_run_carries_identity_to_people_no_step_has_seen(tmp_path, capsys):
    """The whole experiment, small, on its 2 quick split seeds: on both the full model identifies held-out test
    people better than the word-only ceiling and better than the same training without a face."""
    results = runner.main(["--quick", "--json", "--out", str(tmp_path)])
    seeds = results["per_seed"]
    beats = [
        seed["groups"]["test"]["full"]["id_acc"] > seed["groups"]["test"]["full"]["chance"]["word_only_ceiling"]
        and seed["groups"]["test"]["full"]["id_acc"] > seed["groups"]["test"]["no_face"]["id_acc"]
        for seed in seeds.values()
    ]
    assert sum(beats) >= 2, {
        s: {r: v["id_acc"] for r, v in seed["groups"]["test"].items()} for s, seed in seeds.items()
    }
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line["rows"]) == {"test", "novel"} and list(line["rows"]["test"]) == ["untrained", "full", "no_face"]
    assert line["chance"]["test"]["expression_best_constant"] == 0.25 and line["sampler"].startswith(
        "EulerDiscreteScheduler"
    )
    assert set(line["pairs"]) == {"regions", "one-pass"}
    assert {p.name for p in tmp_path.iterdir()} >= {"table.md", "results.json", "grid.png", "seed-0", "seed-1"}
    # Run again: every stage is found done (same fingerprint), nothing is retrained, the same numbers come back.
    again = runner.main(["--quick", "--out", str(tmp_path)])
    assert again["rows"] == results["rows"] and again["seconds"]["total"] < results["seconds"]["total"] / 3


@pytest.mark.slow
def test_every_row_of_the_full_scale_trains_and_is_judged(tmp_path):
    """The full scale's stages, rows, groups, pairs, tables and grid, wired end to end on a few steps of each
    (what they learn is the quick test's claim): one seed, every run of RUNS, here in one process."""
    tiny = Scale(
        people=DrawnPeopleConfig(
            size=16, train_people=40, heldout_people=4, novel_people=4, validation_people=4, frames_per_person=2
        ),
        autoencoder=Schedule(3, 3e-3),
        recognizer=Schedule(3, 3e-3),
        measurer=Schedule(3, 3e-3),
        base_steps=2,
        run_steps=2,
        evaluation=EvalSettings(images_per_prompt=1, steps=2, pair_images=1, attention_timesteps=(500,)),
        seeds=1,
    )
    results = runner.run(tmp_path, tiny, seeds=1, workers=1)
    assert tiny.rows == runner.ROWS
    for group in ("test", "novel"):
        assert list(results["rows"][group]) == list(runner.ROWS)
        assert set(results["tests"][group]) == {"full_vs_word_only_ceiling"} | {
            f"full_vs_{name}" for name in runner.ROWS if name != "full"
        }
    assert set(results["pairs"]) == {"regions", "one-pass"}
    table = (tmp_path / "table.md").read_text()
    assert all(label in table for label in LABELS.values()) and "Two test people" in table
    assert Image.open(tmp_path / "grid.png").size[0] == 5 * 96  # the reference, then full, no face, w/o STEA, w/o ECAC
