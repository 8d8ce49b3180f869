"""What the app's allocator settings (webui/memory.py: blocks of 1 MB and more mapped on their own, two arenas)
cost a CPU generation at Stable Diffusion 1.5's size: UNet steps (the `sd15` preset's architecture, random
weights, 64×64 latents, guidance's batch of 2) timed in two fresh processes, one with the settings and one
without, taking turns, in one run.

    python -m benchmarks.allocator [--steps N] [--rounds N] [--json]

Why: a fixed mmap threshold returns large blocks to the system at once (what keeps the server's memory flat),
but every large tensor is then a fresh mapping whose pages are zeroed on first touch.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from portrait.exits import CommandParser, positive_int
from portrait.exits import run as run_command

PROG = "python -m benchmarks.allocator"


def time_unet_steps(steps: int, app_settings: bool) -> float:
    """Seconds per UNet step in this process (the settings applied first when `app_settings`)."""
    import time

    if app_settings:
        import webui.memory  # noqa: F401  (applies them on import, as the app does)
    import torch

    from portrait.presets import build_random_components

    unet = build_random_components("sd15")["unet"].eval()
    latents, text = torch.randn(2, 4, 64, 64), torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        unet(latents, 999, encoder_hidden_states=text)  # warm
        started = time.perf_counter()
        for step in range(steps):
            latents = latents + 0.01 * unet(latents, 999 - step, encoder_hidden_states=text).sample
    return (time.perf_counter() - started) / steps


def measure(steps: int, rounds: int) -> dict:
    seconds: dict[str, list[float]] = {"default": [], "app": []}
    for _ in range(rounds):
        for name in seconds:  # taking turns, so that a change in the machine's load touches both
            code = f"from benchmarks.allocator import time_unet_steps; print(time_unet_steps({steps}, {name == 'app'}))"
            output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
            seconds[name].append(float(output.strip().splitlines()[-1]))
    default, app = statistics.median(seconds["default"]), statistics.median(seconds["app"])
    return {"seconds_per_step": {"default": default, "app": app}, "app_vs_default": app / default, "runs": seconds}


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(prog=PROG, description="The app's allocator settings against glibc's defaults, CPU.")
    parser.add_argument("--steps", type=positive_int, default=3)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.steps, args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        s = result["seconds_per_step"]
        print(
            f"UNet step at SD 1.5 size, CPU: glibc defaults {s['default']:.2f} s, the app's settings {s['app']:.2f} s "
            f"({result['app_vs_default']:.2f}×; medians of {args.rounds} rounds)"
        )
    return result


if __name__ == "__main__":
    sys.exit(run_command(main, prog="benchmarks.allocator"))
