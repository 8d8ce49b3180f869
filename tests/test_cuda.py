"""CUDA paths on tiny models: half precision, offload, tiling, the safety checker, bf16 training, a resume.

Marked `gpu`: skipped where PyTorch sees no CUDA GPU; `python -m pytest -m gpu` runs them where it does
(`bash benchmarks/gpu_check.sh` runs them and the device check together).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from portrait.engine import ModelSource, load_pipeline
from portrait.pipeline import PortraitBoothPipeline
from train.synthetic import make_synthetic_set
from train.train import main as train

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parent.parent
PROMPT = "a photo of a woman in the snow"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_set(tmp_path_factory.mktemp("celebvt-pairs"), count=6, size=72)


def tiny_on_cuda(dtype: str, safety_checker: bool = False) -> PortraitBoothPipeline:
    pipe = load_pipeline(ModelSource(base="tiny", device="cuda", dtype=dtype, safety_checker=safety_checker, watermark=False))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, face, size: int = 64, **options) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(0)
    return pipe(PROMPT, face=face, num_inference_steps=20, height=size, width=size, generator=generator, output_type="np", **options).images


def face_of(pipe, astronaut, analyzer):
    pipe.face_analyzer = analyzer
    return pipe.encode_faces(astronaut)


def test_fp16_output_is_finite_and_close_to_fp32(astronaut, analyzer):
    full, half = tiny_on_cuda("fp32"), tiny_on_cuda("fp16")
    reference, halved = generate(full, face_of(full, astronaut, analyzer)), generate(half, face_of(half, astronaut, analyzer))
    difference = np.abs(reference.astype(np.float64) - halved)
    # On the CPU (fp16 kernels there too) the tiny model's pictures differ by ≤ 0.002 (mean 0.0003) of the range.
    assert np.isfinite(halved).all() and difference.max() < 0.05 and difference.mean() < 0.005


def test_model_cpu_offload_and_vae_tiling_run(astronaut, analyzer):
    pipe = tiny_on_cuda("fp16")
    face = face_of(pipe, astronaut, analyzer)
    plain = generate(pipe, face, size=128)  # twice the tiny VAE's tile: tiling takes effect
    pipe.vae.enable_tiling()
    tiled = generate(pipe, face, size=128)
    pipe.vae.disable_tiling()
    pipe.enable_model_cpu_offload()
    offloaded = generate(pipe, face, size=128)
    assert pipe.unet.device.type == "cpu"  # between calls the modules wait on the CPU
    for images in (tiled, offloaded):
        assert images.shape == plain.shape and np.isfinite(images).all()
    assert np.abs(offloaded.astype(np.float64) - plain).max() < 0.01  # the same computation, moved


def test_safety_checker_runs_in_fp16(astronaut, analyzer):
    pipe = tiny_on_cuda("fp16", safety_checker=True)
    assert pipe.safety_checker.dtype == torch.float16
    output = pipe(PROMPT, face=face_of(pipe, astronaut, analyzer), num_inference_steps=2, output_type="np")
    assert len(output.nsfw_content_detected) == 1 and np.isfinite(output.images).all()


def recipe(folder, **changes):
    values = yaml.safe_load((REPO / "train/configs/tiny.yaml").read_text()) | {"validation_every": 0, "checkpoint_every": 2} | changes
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_bf16_training_step_with_every_loss(tmp_path, data):
    """bf16 autocast, gradient checkpointing, L_id on every sample (R_t = all steps) and L_loc: finite, and it learns."""
    config = recipe(tmp_path, mixed_precision="bf16", gradient_checkpointing=True, identity_timestep_max=1000, text_only_fraction=0.0,
                    unconditional_fraction=0.0)  # fmt: skip
    final = train(["--config", config, "--data", str(data), "--output-dir", str(tmp_path / "run"), "--max-steps", "2"])
    unet = load_file(final / "unet" / "diffusion_pytorch_model.safetensors")
    start = PortraitBoothPipeline.from_random_preset("tiny").unet.state_dict()
    assert all(torch.isfinite(value).all() for value in unet.values())
    assert any(not torch.equal(value, start[key]) for key, value in unet.items())


def test_resume_on_cuda_matches_an_uninterrupted_run(tmp_path, data):
    config = recipe(tmp_path, mixed_precision="bf16")
    arguments = ["--config", config, "--data", str(data)]
    straight = train([*arguments, "--output-dir", str(tmp_path / "straight"), "--max-steps", "4"])
    train([*arguments, "--output-dir", str(tmp_path / "split"), "--max-steps", "2"])
    split = train([*arguments, "--output-dir", str(tmp_path / "split"), "--max-steps", "4", "--resume", "latest"])
    a = load_file(straight / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(split / "unet" / "diffusion_pytorch_model.safetensors")
    # CUDA kernels may sum in another order from run to run, and Adam magnifies that where a gradient is near zero:
    # nearly every weight equal within 1e-5. A resume that lost the optimizer state moves most weights by ~lr = 1e-3.
    differing = sum(int(((a[key] - b[key]).abs() > 1e-5).sum()) for key in a)
    assert differing <= 1e-3 * sum(value.numel() for value in a.values())


def test_lora_recipe_in_bf16_loads_into_an_fp16_pipeline(tmp_path, data, astronaut, analyzer):
    final = train(["--config", recipe(tmp_path, mixed_precision="bf16", lora_rank=4), "--data", str(data),
                   "--output-dir", str(tmp_path / "lora"), "--max-steps", "2"])  # fmt: skip
    pipe = tiny_on_cuda("fp16")
    trained = pipe.with_portrait_weights(final)
    face = face_of(pipe, astronaut, analyzer)
    assert trained.unet.dtype == torch.float16 and np.isfinite(generate(trained, face)).all()


def test_8bit_adamw_trains_when_bitsandbytes_is_installed(tmp_path, data):
    pytest.importorskip("bitsandbytes")
    final = train(["--config", recipe(tmp_path, mixed_precision="bf16", use_8bit_adam=True), "--data", str(data),
                   "--output-dir", str(tmp_path / "adam8"), "--max-steps", "2"])  # fmt: skip
    assert (final / "unet" / "diffusion_pytorch_model.safetensors").is_file()
