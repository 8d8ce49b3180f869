"""Inference speed and memory: PortraitBooth against plain diffusers Stable Diffusion on the same weights.

In one process, on the same components, scheduler, steps, guidance, size and seed, runs alternate
between the plain `StableDiffusionPipeline`, PortraitBooth with one person (face encoded once per
request, timed separately as `preprocess_s`) and PortraitBooth with two people, in regions mode (`pair`,
MultiDiffusion) and in one-pass mode (`pair_one_pass`, FastComposer's way; goal ≤ 1.05× single). Medians of the
per-image seconds and their ratios are printed; `--json` ends the output with one JSON line.

    python -m benchmarks.inference --tiny --json
    python -m benchmarks.inference --device cuda --options all --json

Without `--tiny` it uses the real weights when they are here (`--base`, default the hub id in the
cache, and `--portrait-weights`), else Stable Diffusion 1.5's architecture with random weights (the
`sd15` preset), which times the same; the report says which ("weights").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from diffusers import ControlNetModel
from diffusers.utils import logging as diffusers_logging
from PIL import Image, ImageOps

from portrait.control import control_map, controlled, load_controlnet
from portrait.defaults import BASE_MODEL_ID, PAPER_GUIDANCE, PAPER_STEPS
from portrait.detailer import FaceDetailer
from portrait.engine import TINY, ModelSource, load_pipeline
from portrait.errors import MissingWeightsError, OptionError
from portrait.examples import example_face
from portrait.exits import CommandParser, describe, positive_int
from portrait.exits import run as run_command
from portrait.multi import Person, PortraitBoothPeoplePipeline
from portrait.pipeline import PortraitBoothPipeline
from portrait.runtime import pick_device
from portrait.samplers import SAMPLERS, make_scheduler

OPTIONS = ("fp16", "bf16", "channels_last", "compile", "dpm", "offload", "vae_slicing", "vae_tiling")
CUDA_ONLY = {"fp16", "offload"}
PROMPT, PAIR_PROMPT = "a photo of a woman in the snow", "a photo of a man and a woman in front of a bar"


@dataclass
class Settings:
    steps: int
    size: int
    guidance: float = PAPER_GUIDANCE
    seed: int = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(prog="python -m benchmarks.inference", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny preset (default: SD 1.5, real weights when present)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="baseline precision (default fp32)")
    parser.add_argument("--steps", type=positive_int, default=PAPER_STEPS)
    parser.add_argument(
        "--fast-steps", type=positive_int, default=20, help="steps of the faster scheduler option (dpm)"
    )
    parser.add_argument("--size", type=positive_int, help="default: the model's native size (64 tiny, 512 SD 1.5)")
    parser.add_argument("--runs", type=positive_int, default=3, help="timed runs of each mode, alternating")
    parser.add_argument("--options", default="", help=f"comma list of {','.join(OPTIONS)}, or 'all'")
    parser.add_argument(
        "--base", default=BASE_MODEL_ID, help="the real base model used when present (hub id or folder)"
    )
    parser.add_argument("--portrait-weights", type=Path)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    return parser.parse_args(argv)


def build(args: argparse.Namespace, device: torch.device, dtype: str) -> tuple[PortraitBoothPipeline, str]:
    """The pipeline and which weights it has: without --tiny the real ones when they are here."""
    # The method against plain diffusers: no safety checker or watermark on either side (the app adds both).
    bare = dict(device=str(device), dtype=dtype, safety_checker=False, watermark=False)
    source = ModelSource(base=TINY, **bare)
    if not args.tiny:
        try:
            pipe = load_pipeline(ModelSource(base=args.base, portrait_weights=args.portrait_weights, **bare))
            pipe.set_progress_bar_config(disable=True)
            return pipe, "real"
        except MissingWeightsError as error:
            print(f"real weights not found ({error}); timing the same architecture with random weights")
            source = ModelSource(base="sd15", **bare)
    pipe = load_pipeline(source)
    pipe.set_progress_bar_config(disable=True)
    return pipe, "random"


def apply_option(
    option: str, pipe: PortraitBoothPipeline, settings: Settings, device: torch.device, fast_steps: int
) -> Settings:
    """Change `pipe` (and so its plain twin, which shares its modules) for one option."""
    if option in ("fp16", "bf16"):
        pipe.to(dtype=torch.float16 if option == "fp16" else torch.bfloat16)
    elif option == "channels_last":
        pipe.unet.to(memory_format=torch.channels_last)
    elif option == "compile":
        pipe.unet.compile()
    elif option == "dpm":
        pipe.scheduler = make_scheduler("dpm++", pipe.scheduler.config)
        return Settings(fast_steps, settings.size, settings.guidance, settings.seed)
    elif option == "offload":
        pipe.enable_model_cpu_offload(device=device)
    elif option == "vae_slicing":
        pipe.vae.enable_slicing()
    elif option == "vae_tiling":
        pipe.vae.enable_tiling()
    return settings


def seconds(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def request_modes(
    pipe: PortraitBoothPipeline, settings: Settings, real_weights: bool = False
) -> dict[str, Callable[[], object]]:
    """Each kind of request on `pipe`'s modules, same prompt, seed and settings: plain diffusers, one person,
    two people (regions, and in one pass), fast mode, face preprocessing alone, ControlNet (canny) and the face
    detailer's extra work on a picture with one small face."""
    plain = pipe.as_plain_pipeline()  # shares every module, so every option applies to both
    photo = example_face("astronaut")
    face = pipe.encode_faces(photo)
    people = [Person(face), Person(pipe.encode_faces(ImageOps.mirror(photo)))]  # mirrored: another identity vector
    several = pipe.with_modules(PortraitBoothPeoplePipeline)
    fast = pipe.with_modules(scheduler=make_scheduler("lcm", pipe.scheduler.config))

    # The face detailer's extra time per picture: one small face (a real photo pasted at half size) re-drawn.
    detailer, small_face = detailer_workload(pipe, settings)
    single_prompt = pipe.identity_prompts(PROMPT)
    sampling = dict(num_inference_steps=settings.steps, guidance_scale=settings.guidance)
    # ControlNet (canny): SD 1.5's when its weights are here, else one of the same architecture with random weights.
    steered = controlled(
        pipe, benchmark_controlnet(pipe, real_weights), control_map("canny", photo), settings.size, settings.size
    )

    def generator() -> torch.Generator:
        return torch.Generator("cpu").manual_seed(settings.seed)

    common = dict(
        num_inference_steps=settings.steps, guidance_scale=settings.guidance, height=settings.size, width=settings.size
    )
    modes = {
        "plain": lambda: plain(PROMPT, generator=generator(), **common),
        "single": lambda: pipe(PROMPT, face=face, generator=generator(), **common),
        "pair": lambda: several(PAIR_PROMPT, people, people_mode="regions", generator=generator(), **common),
        "pair_one_pass": lambda: several(PAIR_PROMPT, people, people_mode="one-pass", generator=generator(), **common),
        "fast": lambda: fast(PROMPT, face=face, generator=generator(), **{**common, **SAMPLERS["lcm"].arguments}),
        "preprocess": lambda: pipe.encode_faces(photo),
        "controlnet": lambda: steered(PROMPT, face=face, generator=generator(), **common),
        "detailer": lambda: detailer.detail(small_face, single_prompt, [face], seed=settings.seed, **sampling),
    }
    return modes


def time_modes(
    modes: dict[str, Callable[[], object]], device: torch.device, runs: int, errors: dict[str, str] | None = None
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds of each mode over `runs` alternating rounds after one warm-up round, and its peak GPU memory
    (GiB, CUDA only). With `errors`, a mode that fails is recorded there in one line and left out from then
    on, and the others go on; without, the failure propagates."""
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    peaks: dict[str, float] = {}
    for run in range(runs + 1):  # the first round warms up (allocations, kernels, compilation)
        for mode, work in modes.items():
            if errors is not None and mode in errors:
                continue
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                elapsed = seconds(work, device)
            except Exception as error:  # noqa: BLE001 - recorded; the other modes still run
                if errors is None:
                    raise
                errors[mode] = describe(error)[0]
                times.pop(mode)
                peaks.pop(mode, None)
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # what the failed request held goes back before the next one
                continue
            if run:
                times[mode].append(elapsed)
            if device.type == "cuda":
                peaks[mode] = max(peaks.get(mode, 0.0), torch.cuda.max_memory_allocated(device) / 2**30)
    return times, peaks


def detailer_workload(pipe: PortraitBoothPipeline, settings: Settings) -> tuple[FaceDetailer, Image.Image]:
    """The face detailer and its benchmark picture: a real photo pasted small, so that its face gets re-drawn."""
    return FaceDetailer(pipe), small_face_picture(example_face("astronaut"), max(settings.size, 256))


def measure(
    pipe: PortraitBoothPipeline, settings: Settings, device: torch.device, runs: int, real_weights: bool = False
) -> dict:
    times, peaks = time_modes(request_modes(pipe, settings, real_weights), device, runs)
    detailer, small_face = detailer_workload(pipe, settings)
    median = {f"{mode}_s": statistics.median(values) for mode, values in times.items()}
    result = {
        **{key: round(value, 4) for key, value in median.items()},
        "single_over_plain": round(median["single_s"] / median["plain_s"], 3),
        "pair_over_single": round(median["pair_s"] / median["single_s"], 3),
        "pair_one_pass_over_single": round(median["pair_one_pass_s"] / median["single_s"], 3),
        "fast_speedup": round(median["single_s"] / median["fast_s"], 3),  # LCM at 6 steps, guidance 1.5
        "controlnet_over_single": round(median["controlnet_s"] / median["single_s"], 3),
        "detailer_over_single": round(median["detailer_s"] / median["single_s"], 3),  # extra time per picture
        "detailer_faces": len(detailer.small_faces(small_face)[0]),
        "steps": settings.steps,
        "size": settings.size,
    }
    if peaks:
        result["peak_mem_gb"] = round(peaks["single"], 3)
        result["plain_peak_mem_gb"] = round(peaks["plain"], 3)
    return result


def benchmark_controlnet(pipe: PortraitBoothPipeline, real_weights: bool) -> ControlNetModel:
    """The canny ControlNet: SD 1.5's beside real weights when it is here, else a random one shaped from the UNet."""
    if real_weights:
        try:
            return load_controlnet("canny", pipe)
        except MissingWeightsError as error:
            print(f"ControlNet weights not found ({error}); timing the same architecture with random weights")
    return load_controlnet("canny", pipe, random_weights=True)


def small_face_picture(photo: Image.Image, side: int) -> Image.Image:
    """A side² grey canvas with `photo` pasted at half size: its face is under the detailer's 1/5 threshold."""
    canvas = Image.new("RGB", (side, side), (120, 140, 160))
    canvas.paste(photo.resize((side // 2, side // 2), Image.LANCZOS), (side // 8, side // 3))
    return canvas


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    diffusers_logging.set_verbosity_error()
    device = pick_device(args.device)
    dtype = args.dtype or "fp32"  # fp32 baseline, so the fp16/bf16 options mean something
    pipe, weights = build(args, device, dtype)
    settings = Settings(steps=args.steps, size=args.size or pipe.unet.config.sample_size * pipe.vae_scale_factor)
    model = TINY if args.tiny else "sd15"
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "model": model}
    report["weights"] = weights
    report["dtype"] = dtype
    report.update(measure(pipe, settings, device, args.runs, weights == "real"))
    print(
        f"{report['device']}, {model}, {settings.size}², {settings.steps} steps: plain {report['plain_s']:.3f} s, "
        f"single {report['single_s']:.3f} s ({report['single_over_plain']:.3f}×), pair {report['pair_s']:.3f} s "
        f"({report['pair_over_single']:.3f}× single), pair one-pass {report['pair_one_pass_s']:.3f} s "
        f"({report['pair_one_pass_over_single']:.3f}× single), fast (LCM, 6 steps) {report['fast_s']:.3f} s "
        f"({report['fast_speedup']:.2f}× faster than single), face preprocessing {report['preprocess_s']:.3f} s"
    )
    print(
        f"  ControlNet (canny): {report['controlnet_s']:.3f} s per picture ({report['controlnet_over_single']:.3f}× single)"
    )
    print(
        f"  face detailer: +{report['detailer_s']:.3f} s per picture ({report['detailer_over_single']:.3f}× single) "
        f"for {report['detailer_faces']} small face(s)"
    )
    chosen = OPTIONS if args.options == "all" else [name for name in args.options.split(",") if name]
    report["options"] = {}
    for option in chosen:
        if option not in OPTIONS:
            raise OptionError(f"unknown option {option!r}; choose from {', '.join(OPTIONS)}")
        if option in CUDA_ONLY and device.type != "cuda":
            report["options"][option] = {"skipped": "CUDA only"}
            continue
        fresh, _ = build(args, device, dtype)
        option_settings = apply_option(option, fresh, settings, device, args.fast_steps)
        measured = measure(fresh, option_settings, device, args.runs, weights == "real")
        measured["single_speedup"] = round(report["single_s"] / measured["single_s"], 3)
        report["options"][option] = measured
        print(
            f"  {option}: single {measured['single_s']:.3f} s ({measured['single_speedup']:.2f}× faster than default), "
            f"{measured['single_over_plain']:.3f}× plain"
            + (f", peak {measured['peak_mem_gb']:.2f} GiB" if "peak_mem_gb" in measured else "")
        )
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    sys.exit(run_command(main, prog="python -m benchmarks.inference"))
