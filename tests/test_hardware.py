"""Running on the GPUs people have, checked on the CPU: the device check's refusal, report and table; the LoRA
recipe end to end; 8-bit AdamW's one line; the accelerate configs, one of them launched."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from safetensors.torch import load_file

from benchmarks import gpu, train_step
from benchmarks.synthetic_set import make_synthetic_set
from portrait.exits import run as run_command
from portrait.pipeline import PortraitBoothPipeline
from portrait.portrait_weights import LORA_FILE, UNET_LORA_FOLDER
from train.config import TrainConfig
from train.train import main as train

from helpers import CHANGED, SAME, largest_difference

REPO = Path(__file__).resolve().parent.parent
ACCELERATE_CONFIGS = sorted((REPO / "train" / "accelerate").glob("*.yaml"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_set(tmp_path_factory.mktemp("celebvt-pairs"), count=6, size=72)


def recipe(folder: Path, **changes) -> str:
    values = yaml.safe_load((REPO / "train/configs/tiny.yaml").read_text())
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(values | {"validation_every": 0, "checkpoint_every": 2} | changes))
    return str(path)


# ---------------------------------------------------------------- the device check


def test_device_check_without_cuda_says_so_in_one_line_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_command(gpu.main, ["--json"], prog="python -m benchmarks.gpu") == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("python -m benchmarks.gpu: error: no CUDA GPU is visible to PyTorch")


def fake_inference(args, device, setting):
    """What measure_inference returns, with one failing request and no one-pass mode."""
    if setting == "fp32":
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    modes = {mode: {"s": 1.5, "peak_mem_gb": 3.25} for mode in gpu.MODES}
    modes["pair"] = {"error": "RuntimeError: boom"}
    modes["pair_one_pass"] = {"n/a": "not measured"}
    dtype, options = gpu.SETTINGS[setting]
    return {"dtype": dtype, "options": list(options), "weights": "random", "size": 512, "steps": 50, "modes": modes}


def fake_training_step(config: TrainConfig, data, steps, device) -> dict:
    if config.use_8bit_adam:
        raise gpu.PortraitError("use_8bit_adam needs bitsandbytes: pip install bitsandbytes")
    seconds = 0.5 if config.lora_rank else 1.0
    return {"step_s": seconds, "mean_step_s": seconds, "peak_mem_gb": 20.0 if config.lora_rank else 30.0}


@pytest.fixture
def fake_measurements(monkeypatch):
    monkeypatch.setattr(gpu, "measure_inference", fake_inference)
    monkeypatch.setattr(train_step, "measure", fake_training_step)
    monkeypatch.setattr(gpu, "make_synthetic_set", lambda folder, count, size: Path(folder))


def test_device_check_report_keeps_its_schema_and_records_each_failure(fake_measurements):
    report = gpu.collect(gpu.parse_args([]), torch.device("cpu"))
    assert json.loads(json.dumps(report)) == report  # plain JSON
    assert set(report) == {"schema", "date", "versions", "model", "budget_s", "inference", "training", "elapsed_s"}
    assert set(report["versions"]) >= {"gpu", "torch", "cuda", "diffusers"} and report["schema"] == gpu.SCHEMA
    assert list(report["inference"]) == list(gpu.SETTINGS)  # in the table's order, though fp32 ran last
    assert report["inference"]["fp32"]["error"].startswith("out of GPU memory: ")
    assert set(report["inference"]["fp16"]["modes"]) == set(gpu.MODES)
    training = report["training"]
    keys = {"resolution", "batch_size", "mixed_precision", "gradient_checkpointing", "weights", "steps", "recipes"}
    assert set(training) == keys
    assert (training["resolution"], training["batch_size"], training["mixed_precision"]) == (512, 2, "bf16")
    assert list(training["recipes"]) == list(gpu.TRAINING)
    lora = {"recipe": "paper_lora.yaml", "changes": {}, "step_s": 0.5, "mean_step_s": 0.5, "peak_mem_gb": 20.0}
    assert training["recipes"]["lora"] == lora | {"over_plain": 0.5}
    assert training["recipes"]["all_8bit_adam"]["error"] == "use_8bit_adam needs bitsandbytes: pip install bitsandbytes"


def test_device_check_table(fake_measurements):
    table = gpu.markdown(gpu.collect(gpu.parse_args([]), torch.device("cpu")))
    lines = table.splitlines()
    assert lines[0].startswith("CPU, torch ") and "CUDA" in lines[0]
    assert "| request | fp16 | fp16_offload | fp16_vae_tiling | fp32 |" in lines
    assert "| one person | 1.500 s, 3.25 GiB | 1.500 s, 3.25 GiB | 1.500 s, 3.25 GiB | failed |" in lines
    assert "| two people (one pass) | n/a | n/a | n/a | failed |" in lines
    assert "| lora (paper_lora.yaml) | – | 0.500 | 0.50× | 20.00 GiB |" in lines
    assert "| all_8bit_adam (paper.yaml) | use_8bit_adam: True | failed | | |" in lines
    assert "- fp16 / pair: RuntimeError: boom" in lines
    assert "- training all_8bit_adam: use_8bit_adam needs bitsandbytes: pip install bitsandbytes" in lines


def test_device_check_stops_at_its_time_budget(fake_measurements, monkeypatch):
    readings = itertools.count()
    monkeypatch.setattr(gpu.Budget, "elapsed", property(lambda budget: 100 * next(readings)))  # 100 s per reading
    report = gpu.collect(gpu.parse_args(["--budget", "250"]), torch.device("cpu"))
    assert "modes" in report["inference"]["fp16"]
    assert report["training"]["recipes"]["lora"]["skipped"] == "time budget of 250 s spent"
    assert report["inference"]["fp32"] == {"skipped": "time budget of 250 s spent"}


@pytest.mark.slow
def test_device_check_measures_tiny_models_end_to_end(monkeypatch):
    """The real measuring code on the CPU at tiny size, cut to one setting and two recipes."""
    monkeypatch.setattr(gpu, "SETTINGS", {"fp32": ("fp32", ())})
    monkeypatch.setattr(gpu, "TRAINING", {name: gpu.TRAINING[name] for name in ("plain", "lora")})
    report = gpu.collect(gpu.parse_args(["--tiny", "--steps", "2", "--train-steps", "1"]), torch.device("cpu"))
    modes = report["inference"]["fp32"]["modes"]
    assert all(modes[mode]["s"] > 0 for mode in ("plain", "single", "pair", "fast", "preprocess"))
    assert modes["pair_one_pass"].get("s", 0) > 0
    assert report["training"]["recipes"]["lora"]["step_s"] > 0 and "| one person |" in gpu.markdown(report)


# ---------------------------------------------------------------- one GPU's memory options


@pytest.mark.slow
def test_lora_recipe_trains_and_its_weights_load_into_the_pipeline(tmp_path, data, astronaut_face):
    final = train(["--config", recipe(tmp_path, lora_rank=4, learning_rate=1e-2), "--data", str(data),
                   "--output-dir", str(tmp_path / "run"), "--max-steps", "3"])  # fmt: skip
    assert sorted(path.name for path in final.iterdir()) == ["stea", UNET_LORA_FOLDER]  # the LoRA, not a whole UNet
    lora = load_file(final / UNET_LORA_FOLDER / LORA_FILE)
    assert lora and all(key.startswith("unet.") and ".lora_" in key for key in lora)
    base = PortraitBoothPipeline.from_random_preset("tiny", seed=0)
    base.set_progress_bar_config(disable=True)
    trained = base.with_portrait_weights(final)
    assert not hasattr(trained.unet, "peft_config")  # fused: a plain UNet again

    def picture(pipe) -> np.ndarray:
        return pipe("a photo of a woman", face=astronaut_face, num_inference_steps=2, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images  # fmt: skip

    before = picture(base)
    only_stea = base.with_modules(stea=trained.stea, fusion_encoder=trained.fusion_encoder)
    assert largest_difference(picture(trained), picture(only_stea)) > CHANGED  # the LoRA changes the output
    assert largest_difference(picture(base), before) < SAME  # the base pipeline's own UNet is untouched
    # Through from_pretrained (a saved base folder), as the CLI and the app load weights: the same UNet.
    base.as_plain_pipeline().save_pretrained(tmp_path / "base")
    loaded = PortraitBoothPipeline.from_pretrained(
        tmp_path / "base", portrait_weights=final, fusion_encoder=base.fusion_encoder
    )
    for key, value in loaded.unet.state_dict().items():
        torch.testing.assert_close(value, trained.unet.state_dict()[key])


@pytest.mark.slow
def test_lora_training_resumes_exactly(tmp_path, data):
    config = recipe(tmp_path, lora_rank=4)
    arguments = ["--config", config, "--data", str(data)]
    straight = train([*arguments, "--output-dir", str(tmp_path / "straight"), "--max-steps", "4"])
    train([*arguments, "--output-dir", str(tmp_path / "split"), "--max-steps", "2"])
    split = train([*arguments, "--output-dir", str(tmp_path / "split"), "--max-steps", "4", "--resume", "latest"])
    for part in (f"{UNET_LORA_FOLDER}/{LORA_FILE}", "stea/diffusion_pytorch_model.safetensors"):
        a, b = load_file(straight / part), load_file(split / part)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_lora_trains_only_the_adapter_and_stea():
    from accelerate import Accelerator

    from train.train import Session

    session = Session.start(TrainConfig.load(REPO / "train/configs/tiny.yaml", lora_rank=4), Accelerator(cpu=True))
    trained = {id(parameter) for parameter in session.parameters}
    parts = session.accelerator.unwrap_model(session.parts)
    unet_trained = [name for name, parameter in parts.unet.named_parameters() if id(parameter) in trained]
    assert unet_trained and all(".lora_" in name for name in unet_trained)
    assert all(id(parameter) in trained for parameter in parts.stea.parameters())  # STEA trains fully
    assert {id(p) for group in session.optimizer.param_groups for p in group["params"]} == trained


def test_paper_lora_recipe_is_the_paper_recipe_with_a_lora():
    paper, lora = (TrainConfig.load(REPO / "train/configs" / name) for name in ("paper.yaml", "paper_lora.yaml"))
    changed = {key for key, value in paper.to_dict().items() if lora.to_dict()[key] != value}
    assert changed == {"lora_rank", "lora_alpha", "learning_rate"} and lora.lora_rank > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA 8-bit AdamW may run (tests/test_cuda.py)")
def test_8bit_adamw_without_cuda_is_one_line(tmp_path, data, capsys):
    config = recipe(tmp_path, use_8bit_adam=True)
    command = ["--config", config, "--data", str(data), "--output-dir", str(tmp_path / "run")]
    assert run_command(train, command, prog="python -m train.train") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "use_8bit_adam needs a CUDA GPU" in error
    assert not (tmp_path / "run").exists()  # said before anything was loaded or written


# ---------------------------------------------------------------- clusters


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda path: path.name)
def test_accelerate_config_parses(path):
    config = load_config_from_file(str(path))
    assert config.num_processes >= 1 and config.num_machines >= 1 and config.mixed_precision == "no"
    assert config.use_cpu == (path.name == "cpu_2proc.yaml")


def test_every_cluster_file_is_there():
    names = {path.name for path in ACCELERATE_CONFIGS}
    assert names == {"1gpu.yaml", "8gpu_ddp.yaml", "multinode.yaml", "deepspeed_zero2.yaml", "cpu_2proc.yaml"}
    for script in ("train_multinode.sbatch", "prepare_celebvt_array.sbatch"):
        text = (REPO / "train" / "slurm" / script).read_text()
        assert text.startswith("#!/bin/bash") and "#SBATCH" in text
    assert "--shard ${SLURM_ARRAY_TASK_ID}/" in (REPO / "train/slurm/prepare_celebvt_array.sbatch").read_text()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_launch_with_the_two_process_cpu_config_trains(tmp_path, data):
    config_file = str(REPO / "train/accelerate/cpu_2proc.yaml")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file,
              "--main_process_port", str(free_port()), "-m", "train.train", "--config", recipe(tmp_path),
              "--data", str(data), "--output-dir", str(tmp_path / "ddp"), "--max-steps", "3"]  # fmt: skip
    done = subprocess.run(launch, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "ddp" / "final" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert sorted(path.name for path in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["step-000002", "step-000003"]


def test_launch_with_the_deepspeed_config_asks_for_zero_2_and_the_recipe_sets_batch_and_clipping(monkeypatch):
    """accelerate's own launch command reads the file up to where it would start the processes; the environment
    it gives them makes a ZeRO-2 DeepSpeedPlugin, into which the trainer puts the recipe's batch and clipping."""
    from accelerate.commands import launch
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    from train.parts import fit_deepspeed

    started = {}
    monkeypatch.setattr(launch, "deepspeed_launcher", lambda args: started.update(prepare_deepspeed_cmd_env(args)[1]))
    config_file = str(REPO / "train/accelerate/deepspeed_zero2.yaml")
    arguments = launch.launch_command_parser().parse_args(["--config_file", config_file, "-m", "train.train"])
    launch.launch_command(arguments)
    assert started["ACCELERATE_USE_DEEPSPEED"] == "true" and started["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "2"
    for name, value in started.items():
        if name.startswith("ACCELERATE_"):
            monkeypatch.setenv(name, value)
    plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == 2 and plugin.deepspeed_config["zero_optimization"]["stage"] == 2
    assert plugin.deepspeed_config["zero_optimization"]["offload_optimizer"]["device"] == "none"
    config = TrainConfig.load(REPO / "train/configs/paper.yaml")
    fit_deepspeed(SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin)), config)
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == config.batch_size == 2
    assert plugin.deepspeed_config["gradient_clipping"] == config.max_grad_norm


def test_deepspeed_asked_for_but_missing_is_one_line(tmp_path, data, monkeypatch, capsys):
    from train import parts

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setattr(parts, "is_deepspeed_available", lambda: False)
    command = ["--config", recipe(tmp_path), "--data", str(data), "--output-dir", str(tmp_path / "run")]
    assert run_command(train, command, prog="python -m train.train") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pip install 'portraitbooth[deepspeed]'" in error
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_deepspeed_zero2_trains_in_bf16_resumes_exactly_and_saves_fp32(tmp_path, data):
    """The ZeRO-2 config's whole path (one engine for the trained parts, its checkpoint, resume, final save) in one
    CPU process: accelerate runs DeepSpeed on a CPU only with one process. Skipped where DeepSpeed is not installed."""
    pytest.importorskip("deepspeed")
    config_file = str(REPO / "train/accelerate/deepspeed_zero2.yaml")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file, "--num_processes", "1",
              "--main_process_port", str(free_port()), "-m", "train.train", "--config",
              recipe(tmp_path, mixed_precision="bf16"), "--data", str(data)]  # fmt: skip
    for output, steps, extra in (("straight", "3", []), ("split", "2", []), ("split", "3", ["--resume", "latest"])):
        done = subprocess.run([*launch, "--output-dir", str(tmp_path / output), "--max-steps", steps, *extra],
                              capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    assert "Resumed from" in done.stderr + done.stdout
    assert (tmp_path / "split" / "checkpoints" / "step-000002" / "pytorch_model").is_dir()  # DeepSpeed's own shards
    for part in ("unet", "stea"):
        file = Path("final") / part / "diffusion_pytorch_model.safetensors"
        a, b = load_file(tmp_path / "straight" / file), load_file(tmp_path / "split" / file)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
        assert {value.dtype for value in a.values()} == {torch.float32}  # the optimizer's fp32, not the bf16 copy


@pytest.mark.slow
def test_gpu_check_script_on_a_cpu_runs_the_tests_and_ends_with_the_check_s_one_line(tmp_path):
    """bash benchmarks/gpu_check.sh, as on the GPU machine but here: its packages import, the gpu tests are skipped,
    the device check says in one line that there is no CUDA GPU, and the script exits with its 2."""
    environment = dict(os.environ, WHEELS=str(tmp_path / "no-wheels"))  # none to install: this Python has them all
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(REPO / "benchmarks/gpu_check.sh"), str(out)], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env=environment)  # fmt: skip
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "diffusers 0.42.1" in (out / "packages.txt").read_text()
    assert " skipped" in (out / "pytest.txt").read_text()
    check = (out / "benchmark.txt").read_text()
    assert check.count("\n") == 1
    assert check.startswith("python -m benchmarks.gpu: error: no CUDA GPU is visible to PyTorch")
    assert done.stdout.rstrip().endswith("gpu tests: exit 0; device check: exit 2; results in " + str(out))
