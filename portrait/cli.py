"""`portrait` (`python -m portrait`): `generate` portraits from a selfie and a prompt as PNG files; `verify` their watermark;
`convert fastcomposer PATH OUT` writes FastComposer's checkpoint as a pipeline folder that loads offline."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import sys
from pathlib import Path
from typing import Sequence

from PIL import Image

from .control import CONTROLS, control_map, controlled, load_controlnet
from .defaults import BASE_MODEL_ID, PAPER_GUIDANCE, PAPER_STEPS
from .demo import DEMO_PREFIX, PHOTO_NOTE, enlarged, example_person
from .detailer import detail_images
from .docstrings import documented_args
from .edit import FACE_REGION, INPAINT_STRENGTH, RESTYLE_STRENGTH, edit_photo
from .engine import (
    TINY,
    ModelSource,
    add_model_arguments,
    identity_model_line,
    load_engine,
    load_pipeline,
    model_source,
    safety_modules,
)
from .errors import MissingWeightsError, OptionError, PortraitError
from .examples import EXAMPLE_FACES, EXAMPLE_PREFIX, example_face
from .exits import CommandParser
from .exits import run as run_command
from .face.analyzer import FaceAnalysis
from .fastcomposer import CHECKPOINT_FILE as FASTCOMPOSER_FILE
from .fastcomposer import NAME as FASTCOMPOSER
from .files import atomic_path
from .images import load_image
from .loras import LCM_LORA_ID, load_loras, parse_lora
from .multi import PEOPLE_MODES, Person, PortraitBoothPeoplePipeline, describe_region
from .pipeline import PortraitBoothPipeline
from .prompts import EMOTION_WORDS
from .provenance import has_watermark, png_info
from .runtime import DTYPES, seeded_generators
from .safety import FLAGGED_NOTE
from .samplers import SAMPLERS, make_scheduler
from .styles import ASPECTS, NO_STYLE, canvas_size, style_names, styled
from .weights_command import add_weights_parser, run_weights

logger = logging.getLogger("portrait")


def pipeline_help(parameter: str, more: str = "") -> str:
    """The help of an option that is a parameter of the pipeline: its docstring's words (`more` adds the CLI's)."""
    described = documented_args(PortraitBoothPipeline.__call__).get(parameter, "")  # none under python -OO
    text = " ".join(part for part in (described, more) if part)
    return text.replace("%", "%%")  # argparse formats help strings


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
        f"'{EXAMPLE_PREFIX}NAME' uses a bundled example ({', '.join(EXAMPLE_FACES)}); with --demo, "
        f"'{DEMO_PREFIX}N' is drawn person N of assets/demo",
    )
    gen.add_argument("--prompt", required=True, help='e.g. "a photo of a woman in the snow"')
    gen.add_argument(
        "--expression",
        action="append",
        choices=EMOTION_WORDS,
        help=pipeline_help("expression", "Once, or per face."),
    )
    gen.add_argument(
        "--identity-word",
        action="append",
        help="word of the prompt that gets the face, once per face (default: man/woman, in order of appearance)",
    )
    gen.add_argument("--identity-occurrence", type=int, help="which occurrence of the identity word, 1 = first")
    gen.add_argument("--negative-prompt", default=None, help=pipeline_help("negative_prompt"))
    gen.add_argument(
        "--scheduler",
        choices=list(SAMPLERS),
        default="euler",
        help="euler (the paper's), dpm++, or lcm (with an LCM-LoRA)",
    )
    gen.add_argument(
        "--steps",
        type=int,
        help=pipeline_help(
            "num_inference_steps",
            f"Default: the scheduler's ({PAPER_STEPS} for euler, {SAMPLERS['lcm'].steps} for lcm).",
        ),
    )
    gen.add_argument(
        "--guidance",
        type=float,
        help=pipeline_help(
            "guidance_scale",
            f"Default: the scheduler's ({PAPER_GUIDANCE:g} for euler, {SAMPLERS['lcm'].guidance:g} for lcm).",
        ),
    )
    gen.add_argument(
        "--lora", action="append", type=parse_lora, default=[], metavar="PATH_OR_ID[:SCALE]",
        help=f"a LoRA to apply, repeatable: {LCM_LORA_ID} for --scheduler lcm, or a style LoRA",
    )  # fmt: skip
    gen.add_argument("--identity-start", type=float, help=pipeline_help("identity_start"))
    gen.add_argument(
        "--people-mode", choices=PEOPLE_MODES,
        help="several people: one-pass (one prompt, one UNet pass) or regions (MultiDiffusion); default: the identity model's",
    )  # fmt: skip
    gen.add_argument(
        "--region", action="append", metavar="X0,Y0,X1,Y1", help="several people: where each goes (fractions)"
    )
    gen.add_argument(
        "--split", type=float, default=0.5, help="several people: left/right border, fraction of the width"
    )
    gen.add_argument("--overlap", type=float, default=0.1, help="several people: width of the soft border")
    gen.add_argument("--scene-weight", type=float, default=0.3, help="several people: weight of the scene prompt")
    gen.add_argument("--num-images", type=int, default=1, help=pipeline_help("num_images_per_prompt"))
    gen.add_argument("--height", type=int, help=pipeline_help("height"))
    gen.add_argument("--width", type=int, help=pipeline_help("width"))
    gen.add_argument("--seed", type=int, help="default: a random seed, printed")
    gen.add_argument("--out", type=Path, default=Path("outputs"), help="folder for the PNG files")
    add_creative_arguments(gen)
    add_model_arguments(gen)
    convert = commands.add_parser(
        "convert", help="write a third-party checkpoint as a pipeline folder that loads offline"
    )
    convert.add_argument("kind", choices=[FASTCOMPOSER], help="the checkpoint's model")
    convert.add_argument(
        "checkpoint", metavar="PATH", help=f"their {FASTCOMPOSER_FILE}, or `{FASTCOMPOSER}` for the hub's"
    )
    convert.add_argument(
        "out", type=Path, metavar="OUT", help="new folder; load it with --base OUT or --identity-model OUT"
    )
    convert.add_argument("--base", default=BASE_MODEL_ID, help="the SD 1.5 it was fine-tuned from (hub id or folder)")
    convert.add_argument("--tiny", action="store_true", help="a checkpoint for the tiny preset (tests)")
    convert.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="precision of the written weights")
    verify = commands.add_parser("verify", help="say whether pictures carry PortraitBooth's invisible watermark")
    verify.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    add_weights_parser(commands)
    return parser


def add_creative_arguments(parser: argparse.ArgumentParser) -> None:
    """Styles and sizes by name (the app's choices), the face detailer, editing a photo, ControlNet."""
    group = parser.add_argument_group("creative tools")
    group.add_argument("--style", choices=style_names(), default=NO_STYLE, help="a style template (assets/styles.json)")
    group.add_argument(
        "--aspect", choices=list(ASPECTS), help="a named size, as in the app (instead of --height/--width)"
    )
    group.add_argument(
        "--detailer", action=argparse.BooleanOptionalAction, default=True,
        help="re-draw faces smaller than 1/5 of the picture's shorter side with their identity (default: on)",
    )  # fmt: skip
    group.add_argument(
        "--init-image", type=Path, metavar="PHOTO", help="your photo: restyled whole, or edited inside --mask"
    )
    group.add_argument(
        "--mask", metavar="MASK|face",
        help=f"with --init-image: where the person goes, a mask image (white = there) or '{FACE_REGION}' (the photo's face)",
    )  # fmt: skip
    group.add_argument(
        "--control-image", type=Path, metavar="PICTURE", help="a picture whose pose or layout the portrait follows"
    )
    group.add_argument(
        "--control", choices=list(CONTROLS), default="canny", help="what is taken from --control-image (default canny)"
    )
    group.add_argument(
        "--control-scale", type=float, default=1.0, help="how strongly the ControlNet steers, 0-2 (default 1)"
    )
    group.add_argument(
        "--strength", type=float,
        help=f"with --init-image: how much is re-drawn, 0-1 (default {RESTYLE_STRENGTH} restyling, {INPAINT_STRENGTH} in a mask)",
    )  # fmt: skip


def picture_size(args: argparse.Namespace, native: int) -> tuple[int | None, int | None]:
    """(height, width): from --aspect, else --height/--width (None: the model's own)."""
    if args.aspect is None:
        return args.height, args.width
    width, height = canvas_size(args.aspect, native)
    return height, width


def check_creative_options(args: argparse.Namespace) -> None:
    """Combinations of the creative flags that cannot work, refused before any model loads."""
    if args.aspect is not None and (args.height or args.width):
        raise OptionError("Give either --aspect or --height/--width, not both")
    if args.init_image is not None and args.control_image is not None:
        raise OptionError("--control-image steers a new picture; it does not combine with --init-image")
    if args.init_image is None:
        if args.mask is not None or args.strength is not None:
            raise OptionError("--mask and --strength edit a photo: give it with --init-image")
        return
    if len(args.face) > 1:
        raise OptionError("--init-image puts one person into a photo; give one --face")
    if args.aspect or args.height or args.width:
        raise OptionError("--init-image sets the picture's size; leave out --aspect, --height and --width")


def describe_edit(args: argparse.Namespace) -> str:
    """What was done to --init-image, for the PNG's metadata."""
    if args.init_image is None:
        return "none (a new picture)"
    where = "the photo's face" if args.mask == FACE_REGION else (f"mask {Path(args.mask).name}" if args.mask else None)
    default = RESTYLE_STRENGTH if where is None else INPAINT_STRENGTH
    strength = default if args.strength is None else args.strength
    what = f"inpainted in {where}" if where else "restyled"
    return f"{Path(args.init_image).name} {what}, strength {strength:g}"


def read_mask(source: str | None) -> Image.Image | str | None:
    """--mask: None, the face region, or a mask image."""
    return source if source in (None, FACE_REGION) else load_image(source)


def read_face(source: str, demo: bool = False) -> Image.Image | FaceAnalysis:
    """A photo, a bundled example, or (with --demo, whose model knows drawn people only) a drawn person."""
    if demo != source.startswith(DEMO_PREFIX):
        raise OptionError(PHOTO_NOTE if demo else f"'{DEMO_PREFIX}N' faces are drawn people, for --demo only")
    if demo:
        return example_person(source.removeprefix(DEMO_PREFIX)).analysis()
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
    check_creative_options(args)
    photos = [[read_face(source, args.demo) for source in sources] for sources in args.face]
    init_image, mask = (load_image(args.init_image), read_mask(args.mask)) if args.init_image else (None, None)
    control_picture = (
        control_map(args.control, load_image(args.control_image), args.weights_dir) if args.control_image else None
    )
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
    height, width = picture_size(args, pipe.unet.config.sample_size * pipe.vae_scale_factor)
    prompt_text, negative_prompt = styled(args.style, args.prompt, args.negative_prompt)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    seeds = [seed + index for index in range(args.num_images)]  # image i is reproducible alone from seeds[i]
    common = dict(
        negative_prompt=negative_prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        num_images_per_prompt=args.num_images,
        generator=seeded_generators(seeds),
    )
    canvas = dict(height=height, width=width, identity_start=args.identity_start)  # a new picture's, not an edit's
    maker = pipe
    if control_picture is not None:
        controlnet = load_controlnet(args.control, pipe, random_weights=model_source(args).is_preset)
        maker = controlled(pipe, controlnet, control_picture, width, height, args.control_scale)
    if init_image is not None:
        result = edit_photo(
            pipe, init_image, prompt_text, faces[0], mask, strength=args.strength, identity_word=words[0],
            expression=expressions[0], **common,
        )  # fmt: skip
    elif people == 1:
        result = maker(
            prompt_text,
            face=faces[0],
            identity_word=words[0],
            identity_occurrence=None if args.identity_occurrence is None else args.identity_occurrence - 1,
            expression=expressions[0],
            **common,
            **canvas,
        )
    else:
        people_list = [
            Person(face, word, expression, region)
            for face, word, expression, region in zip(faces, words, expressions, regions)
        ]
        several = maker.with_modules(PortraitBoothPeoplePipeline)
        result = several(
            prompt_text, people_list, people_mode=args.people_mode, split=args.split, overlap=args.overlap,
            scene_weight=args.scene_weight, **common, **canvas,
        )  # fmt: skip
        places = (
            [describe_region(mask) for mask in result.regions] if result.regions else ["placed by the prompt"] * people
        )
        for index, (sources, placed, place) in enumerate(zip(args.face, result.prompts, places), start=1):
            word = placed.text[slice(*placed.identity_span)]
            print(f"face {index} ({', '.join(sources)}) → {word!r} at characters {placed.identity_span}, {place}")
    images, detailer_notes = result.images, ["off"] * len(seeds)
    if args.detailer and not args.demo:  # the demo's 16×16 cartoons hold no face a photo detector finds
        images, detailer_notes = detail_images(
            pipe, images, seeds, result.prompts, faces, result.regions, negative_prompt=negative_prompt,
            num_inference_steps=args.steps, guidance_scale=args.guidance,
        )  # fmt: skip
        for image_seed, note in zip(seeds, detailer_notes):
            print(f"seed {image_seed}: {note}")
    if args.demo:
        images = [enlarged(image) for image in images]  # the demo draws 16×16
    prompt = result.prompts[0]
    if prompt.notice:
        print(prompt.notice)
    for image_seed, flagged in zip(seeds, result.nsfw_content_detected or []):
        if flagged:
            print(f"the picture of seed {image_seed} was {FLAGGED_NOTE}")
    metadata = {
        "prompt": prompt.text,
        "negative_prompt": negative_prompt or "",
        "style": args.style,
        "scheduler": args.scheduler,
        "steps": str(args.steps),
        "guidance": str(args.guidance),
        "identity_start": "model default" if args.identity_start is None else str(args.identity_start),
        "loras": ", ".join(f"{lora.source}:{lora.scale:g}" for lora in args.lora),
        "model": "tiny (untrained)"
        if args.tiny
        else "demo (drawn people, assets/demo)"
        if args.demo
        else str(args.portrait_weights or args.base),
        "identity_model": identity_model_line(pipe, model_source(args)),
        "edit": describe_edit(args),
        "control": f"{args.control} from {args.control_image.name}, scale {args.control_scale:g}"
        if args.control_image
        else "none",
    }
    return [
        save_png(
            image,
            args.out,
            f"portrait-{image_seed}",
            {**metadata, "seed": str(image_seed), "size": f"{image.width}×{image.height}", "detailer": note},
        )  # fmt: skip
        for image_seed, image, note in zip(seeds, images, detailer_notes)
    ]


def convert(args: argparse.Namespace) -> Path:
    """FastComposer's checkpoint on its base, written (atomically) as a pipeline folder with safetensors and configs;
    the base's safety checker goes with it when it is here, so the folder alone serves the app offline."""
    base = TINY if args.tiny else args.base
    source = ModelSource(
        base=base, identity_model=args.checkpoint, safety_checker=False, device="cpu", dtype=args.dtype
    )
    pipe = load_pipeline(source)
    try:
        pipe = pipe.with_modules(**safety_modules(dataclasses.replace(source, safety_checker=True)))
    except MissingWeightsError as error:
        print(f"written without a safety checker ({error})")
    with atomic_path(args.out) as partial:
        pipe.save_pretrained(partial, safe_serialization=True)
    return args.out


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
        raise OptionError(
            f"--region takes x0,y0,x1,y1 as fractions of the picture, e.g. 0,0,0.5,1; got {text!r}"
        ) from None
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
    if args.command == "weights":
        return run_weights(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("diffusers", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.command == "convert":
        print(f"wrote {convert(args)}")
        return 0
    for path in generate(args):
        print(f"wrote {path}")
    return 0
