"""The paper's evaluation, one command per half: generate images, then score them.

    python -m evaluation generate --subjects DIR --out RUN [--prompts FILE] [--images-per-prompt N]
                                 [--checkpoint W | --baseline sd|untrained|fastcomposer] [--tiny]
    python -m evaluation score --run RUN [--tiny]

DIR holds one reference photo per subject and `subjects.json` ({"file name": "man" | "woman" | word}).
Prompts and protocols: evaluation/protocols.py. Protocols: single (every subject ×
every accessory/style/action/context prompt × N images), expression (the 11 emotion words per subject), multi
(every pair of subjects × the multi prompts; faces matched greedily, a pair scores its worse match).
`--baseline fastcomposer` runs the paper's main baseline through the same pipeline (its published checkpoint,
`--identity-model` to give another file), with its own defaults: its demo's delayed subject conditioning and
two people in one pass.

The plan of images is a pure function of RUN/run.json, so both halves are resumable: existing images
are not regenerated and scored images are not rescored. Scoring writes RUN/scores.csv (one row per
image) and RUN/table.md (the paper's columns per method and protocol). Scoring can run on images of
another method placed in the same layout.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from statistics import mean

import torch
from PIL import Image
from tqdm.auto import tqdm

from portrait.defaults import BASE_MODEL_ID, PAPER_GUIDANCE, PAPER_STEPS
from portrait.engine import ModelSource, load_pipeline
from portrait.errors import OptionError, PortraitError
from portrait.exits import CommandParser, positive_int
from portrait.files import atomic_path, write_png, write_text
from portrait.images import load_image
from portrait.multi import Person, PortraitBoothPeoplePipeline
from portrait.pipeline import PortraitBoothPipeline

from .metrics import MetricModels, geometric_mean, harmonic_mean, id_p, pair_score
from .protocols import DEFAULT_PROMPTS, PROTOCOLS, Job, plan, prompt_text

PROG = "python -m evaluation"
SCORE_COLUMNS = ("file", "method", "protocol", "group", "subjects", "prompt", "seed", "id_pres", "clip_ti", "id_p",
                 "face_detected", "expression", "expression_coefficient")  # fmt: skip


# ------------------------------------------------------------------ generation
def build_pipeline(args: argparse.Namespace) -> PortraitBoothPipeline:
    """The method under test, through the engine's one loader: trained weights, or an untrained STEA."""
    source = ModelSource(
        base="tiny" if args.tiny else args.base,
        portrait_weights=args.checkpoint,
        untrained_stea=args.baseline == "untrained",
        identity_model=args.identity_model if args.baseline == "fastcomposer" else None,
        weights_dir=args.weights_dir,
        safety_checker=False,  # research use: the metrics score every picture as it was made
        watermark=False,
    )
    pipe = load_pipeline(source)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(args: argparse.Namespace) -> Path:
    out = args.out
    words = json.loads((args.subjects / "subjects.json").read_text())
    method = f"baseline-{args.baseline}" if args.baseline else ("checkpoint" if args.checkpoint else "portraitbooth")
    run = {
        "method": method,
        "checkpoint": str(args.checkpoint)
        if args.checkpoint
        else (args.identity_model if args.baseline == "fastcomposer" else None),
        "base": args.base,
        "tiny": args.tiny,
        "subjects_dir": str(args.subjects.resolve()),
        "subjects": words,
        "prompts": json.loads(args.prompts.read_text()),
        "protocols": args.protocols.split(","),
        "images_per_prompt": args.images_per_prompt,
        "steps": args.steps,
        "guidance": args.guidance,
        "safety_checker": "off (research use: every picture is scored as made)",
        "watermark": "off",
        "seed": args.seed,
    }
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    if run_file.exists() and json.loads(run_file.read_text()) != run:
        raise OptionError(f"{out} holds a run with other settings; use another --out or delete it")
    write_text(run_file, json.dumps(run, indent=1))
    todo = [job for job in plan(run) if not (out / job.file).exists()]
    if not todo:
        print(f"all {len(plan(run))} images of {out} exist")
        return out
    pipe = build_pipeline(args)
    faces = {name: pipe.encode_faces(load_image(args.subjects / name)) for name in words}
    plain = pipe.as_plain_pipeline() if args.baseline == "sd" else None
    several = pipe.with_modules(PortraitBoothPeoplePipeline)
    for job in tqdm(todo, desc="generating", unit="image"):
        text, placed = prompt_text(job, words)
        generator = torch.Generator("cpu").manual_seed(args.seed + job.image_index)
        common = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, generator=generator)
        if plain is not None:
            image = plain(text, **common).images[0]
        elif job.protocol == "multi":
            people = [Person(faces[name], identity_word=p.identity_word) for name, p in zip(job.subjects, placed)]
            image = several(text, people, **common).images[0]
        else:
            image = pipe(text, face=faces[job.subjects[0]], identity_word=placed[0].identity_word, **common).images[0]
        write_png(out / job.file, image)
    return out


# ------------------------------------------------------------------ scoring
def score(args: argparse.Namespace) -> list[dict]:
    out = args.run
    run = json.loads((out / "run.json").read_text())
    metrics = MetricModels.tiny() if args.tiny else MetricModels.load(args.weights_dir)
    subjects_dir = Path(run["subjects_dir"])
    references = {}
    for name in run["subjects"]:
        found = metrics.faces(load_image(subjects_dir / name))
        if found.shape[0] == 0:
            raise PortraitError(f"No face found in the reference photo {subjects_dir / name}")
        references[name] = found[0]
    scores_file = out / "scores.csv"
    rows = list(csv.DictReader(scores_file.open())) if scores_file.exists() else []
    scored = {row["file"] for row in rows}
    jobs = [job for job in plan(run) if job.file not in scored and (out / job.file).exists()]
    for job in tqdm(jobs, desc="scoring", unit="image"):
        rows.append(score_image(job, run, metrics, references, out))
    rows.sort(key=lambda row: row["file"])
    with atomic_path(scores_file) as partial, partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SCORE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    write_text(out / "table.md", scores_table(rows, run))
    return rows


def score_image(job: Job, run: dict, metrics: MetricModels, references: dict, out: Path) -> dict:
    image = Image.open(out / job.file).convert("RGB")
    text, _ = prompt_text(job, run["subjects"])
    clip_ti = metrics.clip_similarity(image, [text])[0]
    if job.protocol == "multi":
        found = metrics.faces(image)
        stacked = torch.stack([references[name] for name in job.subjects])
        identity = pair_score((found @ stacked.T).numpy(), len(job.subjects)) if found.shape[0] else 0.0
        detected = found.shape[0] > 0
    else:
        identity, detected = metrics.identity(image, references[job.subjects[0]])
    expression_coefficient = metrics.clip_similarity(image, [job.expression])[0] if job.expression else ""
    return {
        "file": job.file, "method": run["method"], "protocol": job.protocol, "group": job.group,
        "subjects": "+".join(job.subjects), "prompt": text, "seed": run["seed"] + job.image_index,
        "id_pres": round(identity, 5), "clip_ti": round(clip_ti, 5), "id_p": round(id_p(identity, clip_ti), 5),
        "face_detected": int(detected), "expression": job.expression or "",
        "expression_coefficient": "" if expression_coefficient == "" else round(expression_coefficient, 5),
    }  # fmt: skip


def scores_table(rows: list[dict], run: dict) -> str:
    lines = [
        f"Method: {run['method']}" + (f" ({run['checkpoint']})" if run.get("checkpoint") else "")
        + f"; {run['steps']} steps, guidance {run['guidance']}, seed {run['seed']}, {run['images_per_prompt']} image(s) per prompt.",
        "",
        "| Method | Protocol | Images | Id Pres | CLIP-TI | ID(P) | HM | GM | Face det. | Expr. coef. |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for protocol in PROTOCOLS:
        chosen = [row for row in rows if row["protocol"] == protocol]
        if not chosen:
            continue
        identity = mean(float(row["id_pres"]) for row in chosen)
        text = mean(float(row["clip_ti"]) for row in chosen)
        expression = [float(row["expression_coefficient"]) for row in chosen if row["expression_coefficient"] != ""]
        expression_cell = f"{mean(expression):.3f}" if expression else "–"
        lines.append(
            f"| {run['method']} | {protocol} | {len(chosen)} | {identity:.3f} | {text:.3f} | "
            f"{mean(float(row['id_p']) for row in chosen):.3f} | {harmonic_mean(identity, text):.3f} | "
            f"{geometric_mean(identity, text):.3f} | {mean(int(row['face_detected']) for row in chosen):.2f} | "
            f"{expression_cell} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None):
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate")
    gen.add_argument("--subjects", required=True, type=Path)
    gen.add_argument("--out", required=True, type=Path)
    gen.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    gen.add_argument("--images-per-prompt", type=positive_int, default=4)
    which = gen.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", type=Path, help="PortraitBooth weights folder (stea/, unet/)")
    which.add_argument(
        "--baseline", choices=["sd", "untrained", "fastcomposer"],
        help="plain SD, our pipeline with an untrained STEA, or FastComposer's published weights in our pipeline",
    )  # fmt: skip
    gen.add_argument(
        "--identity-model", default="fastcomposer", help="--baseline fastcomposer: its checkpoint (default: the hub's)"
    )
    gen.add_argument("--base", default=BASE_MODEL_ID)
    gen.add_argument("--protocols", default=",".join(PROTOCOLS))
    gen.add_argument("--steps", type=positive_int, default=PAPER_STEPS)
    gen.add_argument("--guidance", type=float, default=PAPER_GUIDANCE)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--tiny", action="store_true", help="tiny random models, offline")
    gen.add_argument("--weights-dir", type=Path)
    sco = commands.add_parser("score")
    sco.add_argument("--run", required=True, type=Path)
    sco.add_argument("--tiny", action="store_true", help="randomly initialised metric networks, offline")
    sco.add_argument("--weights-dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "generate":
        return generate(args)
    rows = score(args)
    print((args.run / "table.md").read_text())
    return rows
