"""The learning experiment: its measures on hand-made judgements, its stand-ins, and the quick run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from experiments.drawn_people import runner as learning
from experiments.drawn_people.heldout import EvalSettings, Judgement, bootstrap_interval, summarize
from experiments.drawn_people.measurer import TraitReader
from experiments.drawn_people.standins import Schedule, train_autoencoder


def judgement(**columns) -> Judgement:
    return Judgement(**{name: np.asarray(values) for name, values in columns.items()})


def test_measures_of_a_hand_made_judgement():
    # 2 people, 4 images: person 0 asked happy(0) twice, person 1 asked sad(1) twice; references show 2 and 3.
    j = judgement(
        person=[0, 0, 1, 1],
        asked=[0, 0, 1, 1],
        reference_expression=[2, 2, 3, 3],
        identified=[0, 1, 1, 1],  # 3 of 4 right
        similarity=[0.9, 0.5, 0.8, 0.6],
        read_expression=[0, 2, 1, 3],  # right, leaked, right, leaked
    )
    summary = summarize(j, people=2, settings=EvalSettings(bootstrap=200))
    assert summary["images"] == 4 and summary["id_acc"] == 0.75 and summary["id_sim"] == 0.7
    assert summary["expr_acc"] == 0.5 and summary["expr_leak"] == 0.5
    # one-sided binomial: P(X ≥ 3 | n = 4, p = 1/2) = 5/16; knowing the word, 1 candidate per sex here: P = 1
    assert summary["id_p_value"] == pytest.approx(5 / 16)
    assert summary["id_p_value_knowing_the_word"] == pytest.approx(1.0)


def test_bootstrap_over_people_keeps_their_images_together():
    values, groups = np.array([1.0, 1.0, 0.0, 0.0]), np.array([0, 0, 1, 1])
    low, high = bootstrap_interval(values, groups, resamples=500)
    assert low == 0.0 and high == 1.0  # whole people resampled: means are 0, 0.5 or 1 only
    assert bootstrap_interval(np.ones(6), np.arange(6), 100) == (1.0, 1.0)


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
    assert learning.run_overrides("full") == {}
    assert learning.run_overrides("no_dip") == {"identity_weight": 0.0}
    assert learning.run_overrides("no_ecac") == {"localization_weight": 0.0}
    assert learning.run_overrides("no_stea") == {"text_only_fraction": 1.0}


@pytest.mark.slow
def test_quick_run_carries_identity_to_people_no_step_has_seen(tmp_path, capsys):
    """The whole experiment, small: the full model identifies held-out people far above chance and
    above the same training without a face feature."""
    results = learning.main(["--quick", "--json", "--out", str(tmp_path)])
    full, no_stea = results["full"], results["no_stea"]
    assert full["id_p_value"] < 0.01, full
    assert full["id_acc"] > no_stea["id_acc"], (full, no_stea)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line) == {"chance", *learning.ROWS} and line["chance"] == 0.1
    assert {"id_acc", "id_sim", "expr_acc", "expr_leak", "attn_in_mask"} <= set(line["full"])
    assert {p.name for p in tmp_path.iterdir()} >= {"table.md", "results.json", "grid.png"}
    # Run again: every stage is found done, nothing is retrained, the same numbers come back.
    again = learning.main(["--quick", "--out", str(tmp_path)])
    assert again["full"] == full and again["seconds"]["total"] < results["seconds"]["total"] / 3
