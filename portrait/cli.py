"""`python -m portrait generate`: portraits from a selfie and a prompt, written as PNG files."""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .engine import EngineOptions, load_engine
from .errors import OptionError, PortraitError
from .examples import EXAMPLE_FACES, EXAMPLE_PREFIX, example_face
from .images import load_image
from .loading import BASE_MODEL_ID, WEIGHTS_DIR_ENV
from .pipeline import PAPER_GUIDANCE, PAPER_STEPS
from .prompts import EMOTION_WORDS
from .runtime import DTYPES

logger = logging.getLogger("portrait")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m portrait", description="PortraitBooth: portraits that look like you.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate portraits from a reference photo and a prompt")
    gen.add_argument(
        "--face",
        nargs="+",
        action="append",
        required=True,
        metavar="PHOTO",
        help="reference photo(s) of one person; several photos are averaged. "
        f"'{EXAMPLE_PREFIX}NAME' uses a bundled example ({', '.join(EXAMPLE_FACES)})",
    )
    gen.add_argument("--prompt", required=True, help='e.g. "a photo of a woman in the snow"')
    gen.add_argument("--expression", choices=EMOTION_WORDS, help="expression written before the identity word")
    gen.add_argument("--identity-word", help="word of the prompt that gets the face (default: man/woman found in it)")
    gen.add_argument("--identity-occurrence", type=int, help="which occurrence of the identity word, 1 = first")
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--steps", type=int, default=PAPER_STEPS)
    gen.add_argument("--guidance", type=float, default=PAPER_GUIDANCE)
    gen.add_argument("--identity-start", type=float, default=0.0, help="fraction of steps before the face is used")
    gen.add_argument("--num-images", type=int, default=1)
    gen.add_argument("--height", type=int)
    gen.add_argument("--width", type=int)
    gen.add_argument("--seed", type=int, help="default: a random seed, printed")
    gen.add_argument("--out", type=Path, default=Path("outputs"), help="folder for the PNG files")
    gen.add_argument("--tiny", action="store_true", help="tiny random models: runs anywhere, makes noise")
    gen.add_argument("--base", default=BASE_MODEL_ID, help="Stable Diffusion 1.5: hub id or local folder")
    gen.add_argument("--portrait-weights", type=Path, help="trained PortraitBooth weights folder (stea/, unet/)")
    gen.add_argument("--identity-checkpoint", type=Path, help="identity encoder .pth (default: weights folder)")
    gen.add_argument("--weights-dir", type=Path, help=f"third-party weights folder (default ${WEIGHTS_DIR_ENV} or weights/)")
    gen.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when present)")
    gen.add_argument("--dtype", choices=list(DTYPES), help="default fp16 on CUDA, fp32 on CPU")
    gen.add_argument("--detector", choices=["auto", "retinaface", "mtcnn"], default="auto")
    return parser


def read_face(source: str) -> Image.Image:
    if source.startswith(EXAMPLE_PREFIX):
        return example_face(source.removeprefix(EXAMPLE_PREFIX))
    return load_image(source)


def generate(args: argparse.Namespace) -> list[Path]:
    if len(args.face) > 1:
        raise OptionError(
            "Several --face options mean several people, and multi-subject generation is not available yet. "
            "For several photos of one person, list them after a single --face."
        )
    if args.identity_occurrence is not None and args.identity_occurrence < 1:
        raise OptionError("--identity-occurrence counts from 1")
    photos = [read_face(source) for source in args.face[0]]
    pipe = load_engine(
        EngineOptions(
            tiny=args.tiny,
            base=args.base,
            portrait_weights=args.portrait_weights,
            identity_checkpoint=args.identity_checkpoint,
            weights_dir=args.weights_dir,
            device=args.device,
            dtype=args.dtype,
            detector=args.detector,
        )
    )
    face = pipe.encode_faces(photos)
    for analysis in face.analyses:
        if analysis.notice:
            print(analysis.notice)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    result = pipe(
        args.prompt,
        face=face,
        identity_word=args.identity_word,
        identity_occurrence=None if args.identity_occurrence is None else args.identity_occurrence - 1,
        expression=args.expression,
        identity_start=args.identity_start,
        negative_prompt=args.negative_prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        num_images_per_prompt=args.num_images,
        height=args.height,
        width=args.width,
        generator=torch.Generator(device="cpu").manual_seed(seed),
    )
    prompt = result.prompts[0]
    if prompt.notice:
        print(prompt.notice)
    metadata = {
        "prompt": prompt.text,
        "negative_prompt": args.negative_prompt or "",
        "seed": str(seed),
        "steps": str(args.steps),
        "guidance": str(args.guidance),
        "identity_start": str(args.identity_start),
        "model": "tiny (untrained)" if args.tiny else str(args.portrait_weights or args.base),
    }
    return [save_png(image, args.out, f"portrait-{seed}-{index}", metadata) for index, image in enumerate(result.images)]


def save_png(image: Image.Image, folder: Path, stem: str, metadata: dict[str, str]) -> Path:
    """Write `image` with text metadata under a name not yet taken; never leaves a partial file."""
    folder.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)
    path, counter = folder / f"{stem}.png", 1
    while path.exists():
        path, counter = folder / f"{stem}-{counter}.png", counter + 1
    partial = folder / f".{path.name}.{os.getpid()}.tmp"
    image.save(partial, format="PNG", pnginfo=info)
    os.replace(partial, path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("diffusers", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        paths = generate(args)
    except PortraitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0
