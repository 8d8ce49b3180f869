"""Training-step cost of each part of the objective: plain SD fine-tuning, + L_loc, + L_id, all three.

Each combination trains the same models (same seed) on the same synthetic batches through the real
training session (`train.train.Session`); the median step time (and peak GPU memory on CUDA) is
printed with its ratio to plain fine-tuning. `--json` ends the output with one JSON line.

    python -m benchmarks.train_step --tiny --json
    python -m benchmarks.train_step --device cuda --json      # SD 1.5's architecture, 512², batch 2, bf16

L_id runs only on face-conditioned samples with t ≤ R_t (about 36 % of batch-2 steps), so its average
cost is what training pays; `peak_mem_gb` is taken over the steps, and `--worst-case` makes every sample pay it.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.utils import logging as diffusers_logging
from torch.utils.data import DataLoader

from benchmarks.synthetic_set import make_synthetic_set
from portrait.exits import CommandParser, positive_int
from portrait.exits import run as run_command
from train.config import TrainConfig
from train.dataset import PortraitDataset, StepBatchSampler, collate
from train.train import Session

COMBINATIONS = {
    "plain": dict(identity_weight=0.0, localization_weight=0.0),
    "loc": dict(identity_weight=0.0, localization_weight=1.0),
    "id": dict(identity_weight=1.0, localization_weight=0.0),
    "all": dict(identity_weight=1.0, localization_weight=1.0),
}
CONFIGS = Path(__file__).resolve().parent.parent / "train" / "configs"
RECIPES = {  # the tiny recipe, or the paper's on SD 1.5's architecture with random weights
    "tiny": dict(config=CONFIGS / "tiny.yaml", resolution=64),
    "sd15": dict(config=CONFIGS / "paper.yaml", resolution=512, base="sd15"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny recipe (default: the paper's, on SD 1.5's architecture)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument(
        "--steps", type=positive_int, default=8, help="timed steps per combination (after 2 warm-up steps)"
    )
    parser.add_argument("--batch-size", type=positive_int, default=2)
    parser.add_argument("--resolution", type=positive_int)
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], help="default: bf16 on CUDA, no on CPU")
    parser.add_argument("--worst-case", action="store_true", help="L_id on every sample (R_t = all timesteps)")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def measure(config: TrainConfig, data: Path, steps: int, device: str) -> dict:
    gc.collect()  # the previous combination's models must be gone before this one's peak is taken
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=device == "cpu")
    session = Session.start(config, accelerator)
    dataset = PortraitDataset(data, session.models.tokenizer, config)
    loader = DataLoader(
        dataset, batch_sampler=StepBatchSampler(len(dataset), config.batch_size, 0, 0, steps + 2), collate_fn=collate
    )
    cuda = accelerator.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step, batch in enumerate(loader):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        session.step(batch, step)
        if cuda:
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - started)
    result = {"step_s": round(statistics.median(times), 4), "mean_step_s": round(statistics.mean(times), 4)}
    # Peak memory is the accelerator's allocator peak; a CPU run has no per-combination figure (null).
    result["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None
    accelerator.free_memory()
    del session, accelerator
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    diffusers_logging.set_verbosity_error()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = "tiny" if args.tiny else "sd15"
    recipe = RECIPES[model]
    precision = args.mixed_precision or ("bf16" if device.startswith("cuda") else "no")
    base = TrainConfig.load(
        recipe["config"],
        base=recipe.get("base"),
        resolution=args.resolution or recipe["resolution"],
        batch_size=args.batch_size,
        mixed_precision=precision,
        num_workers=0,
        identity_timestep_max=1000 if args.worst_case else None,
    )
    report = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu", "model": model}
    report.update(resolution=base.resolution, batch_size=base.batch_size, mixed_precision=precision, combinations={})
    with tempfile.TemporaryDirectory() as folder:
        data = make_synthetic_set(folder, count=8, size=base.resolution)
        for name, weights in COMBINATIONS.items():
            result = measure(dataclasses.replace(base, **weights), data, args.steps, device)
            report["combinations"][name] = result
    plain = report["combinations"]["plain"]["mean_step_s"]
    for name, result in report["combinations"].items():
        result["over_plain"] = round(result["mean_step_s"] / plain, 3)
        memory = f", peak {result['peak_mem_gb']:.2f} GiB" if result["peak_mem_gb"] is not None else ""
        print(
            f"{name:>5}: {result['mean_step_s']:.3f} s/step (median {result['step_s']:.3f}), {result['over_plain']:.2f}× plain{memory}"
        )
    report["all_over_plain"] = report["combinations"]["all"]["over_plain"]
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    sys.exit(run_command(main, prog="python -m benchmarks.train_step"))
