"""The device check: inference and training time and peak memory on one CUDA GPU, in one command.

    python -m benchmarks.gpu --json --out out/gpu        # ≈ 5-8 min on one GPU; writes gpu.json and gpu.md

Stable Diffusion 1.5's architecture at 512²: the real weights when they are here (`--base`), else the
same shapes with random weights (the `sd15` preset), which time and fill memory the same; training always
runs on the random ones. Inference (50 steps, guidance 5): plain diffusers, one person, two people (regions,
and in one pass where the two-people pipeline has it), fast mode (LCM, 6 steps) and face preprocessing, in
fp32, fp16, fp16 with model CPU offload and fp16 with VAE tiling. Training: a step of the paper's recipe
(bf16, gradient checkpointing, batch 2) with plain fine-tuning, + L_loc, + L_id and all three, then the
one-GPU memory recipes (8-bit AdamW, no gradient checkpointing, TF32, `paper_lora.yaml` with and without
8-bit AdamW). The code that times each part is benchmarks/inference.py's and benchmarks/train_step.py's.

Each measurement is guarded: an out-of-memory or any other failure is recorded in one line and the
others still run; past the time budget (`--budget`) the remaining ones are recorded as skipped. The
report names the GPU and the torch, CUDA and diffusers versions. Without CUDA it says so and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable

import diffusers
import torch
from diffusers.utils import logging as diffusers_logging

from benchmarks.synthetic_set import make_synthetic_set
from portrait.defaults import BASE_MODEL_ID, PAPER_STEPS
from portrait.errors import PortraitError
from portrait.exits import CommandParser, describe, positive_int
from portrait.exits import run as run_command
from portrait.files import write_text
from train.config import TrainConfig

from . import inference, train_step

SCHEMA = 1
# Inference settings, each on a freshly built pipeline: its precision and benchmarks.inference's options.
SETTINGS = {
    "fp16": ("fp16", ()),
    "fp16_offload": ("fp16", ("offload",)),
    "fp16_vae_tiling": ("fp16", ("vae_tiling",)),
    "fp32": ("fp32", ()),
}
MODES = {  # benchmarks.inference's request modes, as the table names them
    "plain": "plain diffusers",
    "single": "one person",
    "pair": "two people (regions)",
    "pair_one_pass": "two people (one pass)",
    "fast": "fast mode (LCM, 6 steps)",
    "preprocess": "face preprocessing",
}
# Training rows: (recipe in train/configs/, what changes); the first four are benchmarks.train_step's.
PAPER, LORA = "paper.yaml", "paper_lora.yaml"
TRAINING = {
    **{name: (PAPER, changes) for name, changes in train_step.COMBINATIONS.items()},
    "all_8bit_adam": (PAPER, {"use_8bit_adam": True}),
    "all_no_checkpointing": (PAPER, {"gradient_checkpointing": False}),
    "all_tf32": (PAPER, {"allow_tf32": True}),
    "lora": (LORA, {}),
    "lora_8bit_adam": (LORA, {"use_8bit_adam": True}),
}
TINY_LORA = {"lora_rank": 4}  # the LoRA rows on tiny models (--tiny)
NO_CUDA = (
    "no CUDA GPU is visible to PyTorch: the device check needs one "
    "(the CPU benchmarks are benchmarks.inference and benchmarks.train_step)"
)


class NoCudaError(PortraitError):
    """The device check was started where PyTorch sees no CUDA GPU."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="end with the report as one JSON line")
    parser.add_argument("--out", type=Path, help="write gpu.json and gpu.md (the markdown tables) here")
    parser.add_argument("--budget", type=positive_int, default=420, help="seconds; later measurements are skipped")
    parser.add_argument("--steps", type=positive_int, default=PAPER_STEPS, help="inference steps (fast mode: 6)")
    parser.add_argument("--runs", type=positive_int, default=1, help="timed runs of each request, after one warm-up")
    parser.add_argument("--train-steps", type=positive_int, default=5, help="timed training steps, after 2 warm-ups")
    parser.add_argument("--size", type=positive_int, help="inference and training size (default 512; --tiny 64)")
    parser.add_argument("--base", default=BASE_MODEL_ID, help="the real SD 1.5 used for inference when present")
    parser.add_argument("--tiny", action="store_true", help="tiny models: checks the check itself in seconds")
    return parser.parse_args(argv)


def versions(device: torch.device) -> dict:
    """What the figures were measured on."""
    found = {"torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__}
    found["python"] = platform.python_version()
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        found.update(gpu=properties.name, gpu_memory_gb=round(properties.total_memory / 2**30, 1))
        found["cudnn"] = torch.backends.cudnn.version()
    else:
        found["gpu"] = None
    return found


class Budget:
    """Wall-clock seconds for the whole check; `guarded` runs one measurement, or records why it did not."""

    def __init__(self, seconds: int):
        self.seconds, self.started = seconds, time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def guarded(self, name: str, work: Callable[[], dict]) -> dict:
        if self.elapsed > self.seconds:
            return {"skipped": f"time budget of {self.seconds} s spent"}
        try:
            result = work()
        except Exception as error:  # noqa: BLE001 - one failure is recorded; the others still run
            result = {"error": describe(error)[0]}
        free_memory()
        print(f"  {name}: {one_line_summary(result)} ({self.elapsed:.0f} s)", flush=True)
        return result


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def one_line_summary(result: dict) -> str:
    if "error" in result or "skipped" in result:
        return result.get("error") or f"skipped: {result['skipped']}"
    if "modes" in result:
        return ", ".join(f"{mode} {cell(value)}" for mode, value in result["modes"].items())
    return cell({"s": result["step_s"], "peak_mem_gb": result["peak_mem_gb"]})


def measure_inference(args: argparse.Namespace, device: torch.device, setting: str) -> dict:
    """Every request mode with one setting, on a pipeline built for it; a failing mode is recorded alone."""
    dtype, options = SETTINGS[setting]
    source = argparse.Namespace(tiny=args.tiny, base=args.base, portrait_weights=None)
    pipe, weights = inference.build(source, device, dtype)
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    settings = inference.Settings(steps=args.steps, size=args.size or native)
    for option in options:
        settings = inference.apply_option(option, pipe, settings, device, args.steps)
    errors: dict[str, str] = {}
    times, peaks = inference.time_modes(inference.request_modes(pipe, settings), device, args.runs, errors)
    modes: dict[str, dict] = {}
    for mode in MODES:
        if mode in times:
            modes[mode] = {"s": round(statistics.median(times[mode]), 4), "peak_mem_gb": _rounded(peaks.get(mode))}
        elif mode in errors:
            modes[mode] = {"error": errors[mode]}
        else:
            modes[mode] = {"n/a": "not measured"}
    del pipe
    report = {"dtype": dtype, "options": list(options), "weights": weights, "size": settings.size}
    return report | {"steps": settings.steps, "modes": modes}


def training_config(recipe: str, changes: dict, args: argparse.Namespace) -> TrainConfig:
    """A training row's recipe: the paper's (or its LoRA one) on SD 1.5's shapes, or the tiny one with --tiny."""
    if args.tiny:
        lora = TINY_LORA if recipe == LORA else {}
        return TrainConfig.load(train_step.CONFIGS / "tiny.yaml", **lora, **changes, num_workers=0)
    config = TrainConfig.load(train_step.CONFIGS / recipe, base="sd15", num_workers=0, resolution=args.size or 512)
    return dataclasses.replace(config, **changes)


def measure_training(args: argparse.Namespace, device: torch.device, budget: Budget) -> dict:
    first = training_config(PAPER, {}, args)
    report = {"resolution": first.resolution, "batch_size": first.batch_size, "mixed_precision": first.mixed_precision}
    report.update(gradient_checkpointing=first.gradient_checkpointing, weights="random", steps=args.train_steps)
    report["recipes"] = {}
    with tempfile.TemporaryDirectory() as folder:
        data = make_synthetic_set(folder, count=8, size=first.resolution)
        for name, (recipe, changes) in TRAINING.items():

            def work(recipe=recipe, changes=changes) -> dict:
                config = training_config(recipe, changes, args)
                return train_step.measure(config, data, args.train_steps, device.type)

            result = budget.guarded(f"training {name}", work)
            report["recipes"][name] = {"recipe": recipe, "changes": changes, **result}
    plain = report["recipes"]["plain"].get("mean_step_s")
    for result in report["recipes"].values():
        if plain and "mean_step_s" in result:
            result["over_plain"] = round(result["mean_step_s"] / plain, 3)
    return report


def collect(args: argparse.Namespace, device: torch.device) -> dict:
    """Everything the check measures, on `device` (CUDA; the CPU only for checking the check with --tiny)."""
    budget = Budget(args.budget)
    report = {"schema": SCHEMA, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    report.update(versions=versions(device), model="tiny" if args.tiny else "sd15", budget_s=args.budget)
    report["inference"] = {}
    last = [setting for setting in SETTINGS if setting == "fp32"]  # matters least: after training
    for part in [*(setting for setting in SETTINGS if setting not in last), "training", *last]:
        if part == "training":
            report["training"] = measure_training(args, device, budget)
        else:
            measured = budget.guarded(f"inference {part}", partial(measure_inference, args, device, part))
            report["inference"][part] = measured
    report["inference"] = {setting: report["inference"][setting] for setting in SETTINGS}
    report["elapsed_s"] = round(budget.elapsed, 1)
    return report


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def cell(result: dict) -> str:
    """One table cell: seconds and peak memory, or what stood in the way."""
    if "error" in result:
        return "failed"
    if "skipped" in result:
        return "skipped"
    if "n/a" in result:
        return "n/a"
    memory = f", {result['peak_mem_gb']:.2f} GiB" if result.get("peak_mem_gb") is not None else ""
    return f"{result['s']:.3f} s{memory}"


def markdown(report: dict) -> str:
    """The report as README-ready markdown: a header line, the inference table, the training table, failures."""
    found = report["versions"]
    memory = f" ({found['gpu_memory_gb']} GiB)" if found.get("gpu_memory_gb") else ""
    lines = [
        f"{found['gpu'] or 'CPU'}{memory}, torch {found['torch']}, CUDA {found['cuda']}, "
        f"diffusers {found['diffusers']}; "
        f"{report['model']}, measured {report['date']} in {report['elapsed_s']} s (`python -m benchmarks.gpu`).",
        "",
    ]
    failures: list[str] = []
    settings = report["inference"]
    first = next((result for result in settings.values() if "modes" in result), None)
    if first is not None:
        size, steps, weights = first["size"], first["steps"], first["weights"]
        lines.append(f"Inference, {size}², {steps} steps, {weights} weights: seconds per image, peak GPU memory")
        lines.append("")
    lines += ["| request | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for mode, label in MODES.items():
        cells = []
        for setting, result in settings.items():
            value = result["modes"][mode] if "modes" in result else result
            cells.append(cell(value))
            if "error" in value:
                failures.append(f"{setting} / {mode}: {value['error']}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    failures = list(dict.fromkeys(failures))
    training = report["training"]
    lines += [
        "",
        f"Training step, {training['resolution']}², batch {training['batch_size']}, {training['mixed_precision']}, "
        f"{training['weights']} weights, median of {training['steps']} steps after 2 warm-up steps",
        "",
        "| recipe | changes | s/step | × plain | peak GPU memory |",
        "|---|---|---|---|---|",
    ]
    for name, result in training["recipes"].items():
        changes = ", ".join(f"{key}: {value}" for key, value in result["changes"].items()) or "–"
        if "step_s" in result:
            memory = f"{result['peak_mem_gb']:.2f} GiB" if result["peak_mem_gb"] is not None else "–"
            ratio = f"{result.get('over_plain', 1.0):.2f}×"
            lines.append(f"| {name} ({result['recipe']}) | {changes} | {result['step_s']:.3f} | {ratio} | {memory} |")
        else:
            lines.append(f"| {name} ({result['recipe']}) | {changes} | {cell(result)} | | |")
            if "error" in result:
                failures.append(f"training {name}: {result['error']}")
    if failures:
        lines += ["", "Failed:", *(f"- {failure}" for failure in failures)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise NoCudaError(NO_CUDA)
    diffusers_logging.set_verbosity_error()
    device = torch.device("cuda")
    print(f"device check on {torch.cuda.get_device_name(device)}, budget {args.budget} s", flush=True)
    report = collect(args, device)
    table = markdown(report)
    print(table)
    if args.out is not None:
        write_text(args.out / "gpu.json", json.dumps(report, indent=1) + "\n")
        write_text(args.out / "gpu.md", table)
        print(f"written: {args.out / 'gpu.json'}, {args.out / 'gpu.md'}")
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    sys.exit(run_command(main, prog="python -m benchmarks.gpu"))
