"""`portrait` (`python -m portrait`): `generate` portraits from a selfie and a prompt as PNG files; `verify` their watermark."""

from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path
from typing import Sequence

from PIL import Image

from .commands import CommandParser
from .commands import run as run_command
from .engine import add_model_arguments, load_engine, model_source
from .errors import OptionError, PortraitError
from .examples import EXAMPLE_FACES, EXAMPLE_PREFIX, example_face
from .files import atomic_path
from .images import load_image
from .multi import Person, PortraitBoothPeoplePipeline, describe_region
from .pipeline import PAPER_GUIDANCE, PAPER_STEPS
from .prompts import EMOTION_WORDS
from .provenance import has_watermark, png_info
from .runtime import seeded_generators
from .safety import FLAGGED_NOTE
from .speed import LCM_LORA_ID, SAMPLERS, load_loras, make_scheduler, parse_lora

logger = logging.getLogger("portrait")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="portrait", description="PortraitBooth: portraits that look like you.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate portraits from a reference photo and a prompt")
    gen.add_argument(
        "--face",
        nargs="+",
        action="append",
        required=True,
        metavar="PHOTO",
        help="reference photo(s) of one person, averaged; repeat --face for a second person. "
        f"'{EXAMPLE_PREFIX}NAME' uses a bundled example ({', '.join(EXAMPLE_FACES)})",
    )
    gen.add_argument("--prompt", required=True, help='e.g. "a photo of a woman in the snow"')
    gen.add_argument(
        "--expression", action="append", choices=EMOTION_WORDS, help="written before the identity word; once, or per face"
    )
    gen.add_argument(
        "--identity-word",
        action="append",
        help="word of the prompt that gets the face, once per face (default: man/woman, in order of appearance)",
    )
    gen.add_argument("--identity-occurrence", type=int, help="which occurrence of the identity word, 1 = first")
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--scheduler", choices=list(SAMPLERS), default="euler", help="euler (the paper's), dpm++, or lcm (with an LCM-LoRA)")
    gen.add_argument("--steps", type=int, help=f"default: the scheduler's ({PAPER_STEPS} for euler, {SAMPLERS['lcm'].steps} for lcm)")
    gen.add_argument("--guidance", type=float, help=f"default: the scheduler's ({PAPER_GUIDANCE:g} for euler, {SAMPLERS['lcm'].guidance:g} for lcm)")
    gen.add_argument(
        "--lora", action="append", type=parse_lora, default=[], metavar="PATH_OR_ID[:SCALE]",
        help=f"a LoRA to apply, repeatable: {LCM_LORA_ID} for --scheduler lcm, or a style LoRA",
    )  # fmt: skip
    gen.add_argument("--identity-start", type=float, default=0.0, help="fraction of steps before the face is used")
    gen.add_argument("--region", action="append", metavar="X0,Y0,X1,Y1", help="several people: where each goes (fractions)")
    gen.add_argument("--split", type=float, default=0.5, help="several people: left/right border, fraction of the width")
    gen.add_argument("--overlap", type=float, default=0.1, help="several people: width of the soft border")
    gen.add_argument("--scene-weight", type=float, default=0.3, help="several people: weight of the scene prompt")
    gen.add_argument("--num-images", type=int, default=1)
    gen.add_argument("--height", type=int, help="pixels, a multiple of 8 up to 2048 (default: the model's)")
    gen.add_argument("--width", type=int, help="pixels, a multiple of 8 up to 2048 (default: the model's)")
    gen.add_argument("--seed", type=int, help="default: a random seed, printed")
    gen.add_argument("--out", type=Path, default=Path("outputs"), help="folder for the PNG files")
    add_model_arguments(gen)
    verify = commands.add_parser("verify", help="say whether pictures carry PortraitBooth's invisible watermark")
    verify.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    return parser


def read_face(source: str) -> Image.Image:
    if source.startswith(EXAMPLE_PREFIX):
        return example_face(source.removeprefix(EXAMPLE_PREFIX))
    return load_image(source)


def generate(args: argparse.Namespace) -> list[Path]:
    people = len(args.face)
    words, expressions, regions = _per_person(args, people)
    if args.identity_occurrence is not None and (args.identity_occurrence < 1 or people > 1):
        raise OptionError("--identity-occurrence counts from 1 and is for one person (several are matched in order)")
    if args.seed is not None and not 0 <= args.seed < 2**63 - args.num_images:
        raise OptionError(f"--seed takes a whole number from 0 to 2^63, got {args.seed}")
    photos = [[read_face(source) for source in sources] for sources in args.face]
    sampler = SAMPLERS[args.scheduler]
    args.steps = sampler.steps if args.steps is None else args.steps
    args.guidance = sampler.guidance if args.guidance is None else args.guidance
    pipe = load_engine(model_source(args))
    pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    load_loras(pipe, args.lora)
    faces = [pipe.encode_faces(person_photos) for person_photos in photos]
    for analysis in (analysis for face in faces for analysis in face.analyses):
        if analysis.notice:
            print(analysis.notice)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    seeds = [seed + index for index in range(args.num_images)]  # image i is reproducible alone from seeds[i]
    common = dict(
        negative_prompt=args.negative_prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        num_images_per_prompt=args.num_images,
        height=args.height,
        width=args.width,
        generator=seeded_generators(seeds),
        identity_start=args.identity_start,
    )
    if people == 1:
        result = pipe(
            args.prompt,
            face=faces[0],
            identity_word=words[0],
            identity_occurrence=None if args.identity_occurrence is None else args.identity_occurrence - 1,
            expression=expressions[0],
            **common,
        )
    else:
        people_list = [Person(face, word, expression, region) for face, word, expression, region in zip(faces, words, expressions, regions)]
        several = pipe.with_modules(PortraitBoothPeoplePipeline)
        result = several(args.prompt, people_list, split=args.split, overlap=args.overlap, scene_weight=args.scene_weight, **common)
        for index, (sources, placed, mask) in enumerate(zip(args.face, result.prompts, result.regions), start=1):
            word = placed.text[slice(*placed.identity_span)]
            print(f"face {index} ({', '.join(sources)}) → {word!r} at characters {placed.identity_span}, {describe_region(mask)}")
    prompt = result.prompts[0]
    if prompt.notice:
        print(prompt.notice)
    for image_seed, flagged in zip(seeds, result.nsfw_content_detected or []):
        if flagged:
            print(f"the picture of seed {image_seed} was {FLAGGED_NOTE}")
    metadata = {
        "prompt": prompt.text,
        "negative_prompt": args.negative_prompt or "",
        "scheduler": args.scheduler,
        "steps": str(args.steps),
        "guidance": str(args.guidance),
        "identity_start": str(args.identity_start),
        "loras": ", ".join(f"{lora.source}:{lora.scale:g}" for lora in args.lora),
        "model": "tiny (untrained)" if args.tiny else str(args.portrait_weights or args.base),
    }
    return [
        save_png(image, args.out, f"portrait-{image_seed}", {**metadata, "seed": str(image_seed)})
        for image_seed, image in zip(seeds, result.images)
    ]


def verify(paths: list[Path]) -> int:
    """One line per picture, every picture checked; 0 when every one carries the watermark, 1 when one does
    not, 2 when one could not be read (its line, on stderr, says why)."""
    status = 0
    for path in paths:
        try:
            marked = has_watermark(load_image(path))
        except PortraitError as error:
            print(f"portrait: error: {path}: {error}", file=sys.stderr)
            status = 2
            continue
        print(f"{path}: {'watermark found' if marked else 'no watermark'}")
        status = status or (0 if marked else 1)
    return status


def _per_person(args: argparse.Namespace, people: int) -> tuple[list, list, list]:
    """Identity words, expressions and regions, one per person (one expression may serve everyone)."""
    words = args.identity_word or [None] * people
    expressions = args.expression or [None]
    expressions = expressions * people if len(expressions) == 1 else expressions
    regions = [_parse_box(text) for text in args.region] if args.region else [None] * people
    for flag, values in (("--identity-word", words), ("--expression", expressions), ("--region", regions)):
        if len(values) != people:
            raise OptionError(f"{flag} was given {len(values)} times for {people} face(s); give it once per --face")
    return words, expressions, regions


def _parse_box(text: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(value) for value in text.split(","))
    except ValueError:
        raise OptionError(f"--region takes x0,y0,x1,y1 as fractions of the picture, e.g. 0,0,0.5,1; got {text!r}") from None
    return x0, y0, x1, y1


def save_png(image: Image.Image, folder: Path, stem: str, metadata: dict[str, str]) -> Path:
    """Write `image` with its settings and the marks of generated media under a name not yet taken;
    never leaves a partial file."""
    folder.mkdir(parents=True, exist_ok=True)
    info = png_info(metadata)
    path, counter = folder / f"{stem}.png", 1
    while path.exists():
        path, counter = folder / f"{stem}-{counter}.png", counter + 1
    with atomic_path(path) as partial:
        image.save(partial, format="PNG", pnginfo=info)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`portrait` and `python -m portrait`: the exit status; a failure is one line on stderr."""
    return run_command(_main, argv, prog="portrait")


def _main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "verify":
        return verify(args.images)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("diffusers", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for path in generate(args):
        print(f"wrote {path}")
    return 0
