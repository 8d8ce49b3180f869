"""The training reader and script on a synthetic set the tests write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from benchmarks.synthetic_set import make_synthetic_set
from portrait.errors import OptionError
from portrait.pipeline import PortraitBoothPipeline
from train.config import TrainConfig
from train.dataset import NO_TOKEN, Draw, PortraitDataset, StepBatchSampler, collate
from train.parts import TrainedParts
from train.train import Objective, build_models, main, step_generator

REPO = Path(__file__).resolve().parent.parent
TINY = "train/configs/tiny.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_set(tmp_path_factory.mktemp("celebvt-pairs"), count=6, size=72)


@pytest.fixture(scope="module")
def tokenizer(tiny_pipe):
    return tiny_pipe.tokenizer


def test_dropout_fractions_match_the_config(data, tokenizer):
    dataset = PortraitDataset(data, tokenizer, TrainConfig.load(TINY))
    draws = [draw for batch in StepBatchSampler(len(dataset), 4, seed=1, start_step=0, end_step=500) for draw in batch]
    items = [dataset[draw] for draw in draws]
    unconditional = np.mean([item["identity_token"] == NO_TOKEN for item in items])
    text_only = np.mean([(item["face_token"] == NO_TOKEN) & (item["identity_token"] != NO_TOKEN) for item in items])
    masked = np.mean([bool(item["masked_noise"]) for item in items])
    # 2000 draws: three standard deviations of a 10 % rate are ±2 %, of 50 % ±3.4 %
    assert abs(unconditional - 0.1) < 0.02 and abs(text_only - 0.1) < 0.02 and abs(masked - 0.5) < 0.034


def test_items_are_aligned_and_flips_mirror_the_landmarks(data, tokenizer):
    config = TrainConfig.load(TINY, flip_probability=0.0, unconditional_fraction=0.0, text_only_fraction=0.0)
    flipped_config = TrainConfig.load(TINY, flip_probability=1.0, unconditional_fraction=0.0, text_only_fraction=0.0)
    item = PortraitDataset(data, tokenizer, config)[Draw(0, 7)]
    flipped = PortraitDataset(data, tokenizer, flipped_config)[Draw(0, 7)]
    assert item["pixel_values"].shape == (3, 64, 64) and item["face_mask"].shape == (1, 64, 64)
    assert (
        item["reference"].shape == (3, 112, 112) and -1 <= item["pixel_values"].min() <= item["pixel_values"].max() <= 1
    )
    x, y = item["landmarks"][2].round().int().tolist()
    assert item["face_mask"][0, y, x] == 1  # the nose lies in the face mask
    torch.testing.assert_close(flipped["pixel_values"], item["pixel_values"].flip(-1))
    torch.testing.assert_close(flipped["landmarks"][1, 0], 63 - item["landmarks"][0, 0])  # right eye ← left eye
    assert tokenizer.convert_ids_to_tokens(int(item["input_ids"][int(item["identity_token"])])) == "woman</w>"


def test_ablation_words_rewrite_the_caption(data, tokenizer):
    config = TrainConfig.load("train/configs/ablation_person_token.yaml", resolution=64, unconditional_fraction=0.0)
    item = PortraitDataset(data, tokenizer, config)[Draw(1, 3)]
    assert tokenizer.convert_ids_to_tokens(int(item["input_ids"][int(item["identity_token"])])) == "person</w>"


def write_config(folder, **changes):
    values = (
        yaml.safe_load(open(TINY)) | {"validation_every": 0, "checkpoint_every": 4, "keep_checkpoints": 5} | changes
    )
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def fixed_loss(config, data, folder=None) -> float:
    """The full objective on one fixed batch and fixed noise: comparable before and after training."""
    models = build_models(config)
    if folder is not None:
        models.unet.load_state_dict(load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"))
        models.stea.load_state_dict(load_file(folder / "stea" / "diffusion_pytorch_model.safetensors"))
    dataset = PortraitDataset(data, models.tokenizer, config)
    batch = collate([dataset[Draw(index, index)] for index in range(4)])
    objective = Objective(models, config, None, torch.float32)
    with torch.no_grad():
        parts = TrainedParts(models.unet, models.stea)
        return objective(parts, batch, step_generator(0, 0, 0, torch.device("cpu")))["total"].item()


@pytest.mark.slow
def test_training_lowers_the_loss_and_resumes_exactly(tmp_path, data):
    recipe = write_config(tmp_path)
    straight, split = tmp_path / "straight", tmp_path / "split"
    main(["--config", str(recipe), "--data", str(data), "--output-dir", str(straight), "--max-steps", "12"])
    main(["--config", str(recipe), "--data", str(data), "--output-dir", str(split), "--max-steps", "8"])
    main(
        [
            "--config",
            str(recipe),
            "--data",
            str(data),
            "--output-dir",
            str(split),
            "--max-steps",
            "12",
            "--resume",
            "latest",
        ]
    )
    for part in ("unet", "stea"):
        a = load_file(straight / "final" / part / "diffusion_pytorch_model.safetensors")
        b = load_file(split / "final" / part / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (split / "checkpoints").iterdir()) == ["step-000004", "step-000008", "step-000012"]
    config = TrainConfig.load(recipe)
    assert fixed_loss(config, data, straight / "final") < fixed_loss(config, data)


@pytest.mark.slow
def test_trained_weights_load_into_the_pipeline(tmp_path, data, astronaut):
    recipe = write_config(tmp_path, validation_every=3)
    output = tmp_path / "run"
    main(["--config", str(recipe), "--data", str(data), "--output-dir", str(output), "--max-steps", "3"])
    assert sorted(p.name for p in (output / "validation" / "step-000003").iterdir())[0] == "face0-prompt0.png"
    base = PortraitBoothPipeline.from_random_preset("tiny", seed=0)
    base.as_plain_pipeline().save_pretrained(tmp_path / "base")
    pipe = PortraitBoothPipeline.from_pretrained(
        tmp_path / "base", portrait_weights=output / "final", fusion_encoder=base.fusion_encoder
    )
    pipe.set_progress_bar_config(disable=True)
    assert pipe.stea.is_trained and pipe("a photo of a woman", astronaut, num_inference_steps=2).images[0].size == (
        64,
        64,
    )


@pytest.mark.slow
def test_without_stea_ablation_fuses_clip_features_and_can_train_them(tmp_path, data):
    frozen = main(["--config", str(write_config(tmp_path, fusion_encoder="clip_tiny")), "--data", str(data),
                   "--output-dir", str(tmp_path / "frozen"), "--max-steps", "2"])  # fmt: skip
    config = yaml.safe_load((frozen / "stea" / "config.json").read_text())
    assert config["fusion_encoder"] == "clip_tiny" and config["identity_dim"] == 32
    assert sorted(p.name for p in frozen.iterdir()) == ["stea", "unet"]  # a frozen encoder is not saved again
    trained = main(["--config", str(write_config(tmp_path, fusion_encoder="clip_tiny", train_fusion_encoder=True)),
                    "--data", str(data), "--output-dir", str(tmp_path / "trained"), "--max-steps", "2"])  # fmt: skip
    assert sorted(p.name for p in trained.iterdir()) == ["fusion_encoder", "stea", "unet"]
    untouched = PortraitBoothPipeline.from_random_preset("tiny").with_portrait_weights(frozen).fusion_encoder
    loaded = PortraitBoothPipeline.from_random_preset("tiny").with_portrait_weights(trained).fusion_encoder
    changed = load_file(trained / "fusion_encoder" / "diffusion_pytorch_model.safetensors")
    assert type(loaded).__name__ == type(untouched).__name__ == "ClipImageEncoder"  # the weights' own encoder, not φ
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in changed.items())
    assert not all(torch.equal(untouched.state_dict()[k], v) for k, v in changed.items())


@pytest.mark.slow
def test_two_processes_through_accelerate_and_resume(tmp_path, data):
    """DDP over two CPU processes (gloo): the multi-GPU path, and a resume across it."""
    import subprocess
    import sys

    recipe = write_config(tmp_path)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "train.train", "--config", str(recipe),
              "--data", str(data), "--output-dir", str(tmp_path / "ddp")]  # fmt: skip
    for steps, extra in (("4", []), ("6", ["--resume", "latest"])):
        done = subprocess.run([*launch, "--max-steps", steps, *extra], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "Resumed from" in done.stderr + done.stdout
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["step-000004", "step-000006"]


@pytest.mark.slow
def test_bf16_mixed_precision_with_validation(tmp_path, data):
    """Frozen modules in bf16 beside fp32 trained ones, as on a GPU; CPU autocast runs the same code."""
    recipe = write_config(tmp_path, mixed_precision="bf16", validation_every=2)
    final = main(
        ["--config", str(recipe), "--data", str(data), "--output-dir", str(tmp_path / "bf16"), "--max-steps", "2"]
    )
    assert (final / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert len(list((tmp_path / "bf16" / "validation" / "step-000002").glob("*.png"))) == 4


RECIPE_CHANGES = {  # what each recipe changes in the paper's (train/configs/paper.yaml)
    "ablation_he_she.yaml": {"identity_words": ["he", "she"]},
    "ablation_no_dip.yaml": {"identity_weight": 0.0},
    "ablation_no_ecac.yaml": {"localization_weight": 0.0},
    "ablation_no_expression.yaml": {"mu": 0.0},
    "ablation_no_stea.yaml": {"fusion_encoder": "clip_vit_l14", "train_fusion_encoder": True},
    "ablation_person_mask.yaml": {"mask_kind": "person"},
    "ablation_person_token.yaml": {"identity_words": ["person"]},
    "paper_lora.yaml": {"learning_rate": 1e-4, "lora_rank": 64, "lora_alpha": 64},
}


@pytest.mark.parametrize("recipe", sorted(RECIPE_CHANGES))
def test_each_recipe_changes_exactly_its_fields_of_the_papers(recipe):
    paper = TrainConfig.load(REPO / "train" / "configs" / "paper.yaml").to_dict()
    config = TrainConfig.load(REPO / "train" / "configs" / recipe).to_dict()
    assert {key: value for key, value in config.items() if value != paper[key]} == RECIPE_CHANGES[recipe]


def test_every_recipe_is_checked_and_the_papers_is_the_default():
    recipes = {p.name for p in (REPO / "train" / "configs").glob("*.yaml")}
    assert recipes == {*RECIPE_CHANGES, "paper.yaml", "tiny.yaml"}
    assert TrainConfig.load(REPO / "train" / "configs" / "paper.yaml") == TrainConfig()
    TrainConfig.load(REPO / "train" / "configs" / "tiny.yaml")


def test_recipes_that_inherit_in_a_circle_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("inherit: b.yaml\nmu: 0.0\n")
    (tmp_path / "b.yaml").write_text("inherit: a.yaml\n")
    with pytest.raises(OptionError, match="inherit in a circle"):
        TrainConfig.load(tmp_path / "a.yaml")


def test_training_the_fused_encoder_needs_one_named():
    """Without fusion_encoder, STEA fuses φ itself: training it would change the network that measures L_id."""
    with pytest.raises(OptionError, match="fusion_encoder"):
        TrainConfig(train_fusion_encoder=True)


def test_a_checkpoint_from_before_the_fusion_encoder_rename_is_found(tmp_path):
    """Checkpoints keep the trained fusion encoder in fusion_encoder/; older ones in identity_encoder/."""
    from train.checkpoints import part_in_checkpoint

    encoder = torch.nn.Linear(2, 2)  # neither STEA nor a UNet: the fusion encoder's folder
    (tmp_path / "identity_encoder").mkdir()
    assert part_in_checkpoint(tmp_path, encoder) == tmp_path / "identity_encoder"
    (tmp_path / "fusion_encoder").mkdir()
    assert part_in_checkpoint(tmp_path, encoder) == tmp_path / "fusion_encoder"
