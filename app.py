"""PortraitBooth in the browser: a selfie and a prompt in, portraits out, for one or two people.

    python app.py                     # SD 1.5 when present, else the offline demo of drawn people (banner says which)
    python app.py --demo              # the offline demo: a toy model of drawn people, trained on a CPU
    python app.py --tiny --port 7860  # tiny untrained models, never touches the network
    python app.py --identity-model fastcomposer  # FastComposer's published weights (MIT) instead of PortraitBooth's

Named API endpoints (gradio_client): detect_face, check_selfies, generate, generate_pair, edit_photo; in the offline
demo detect_face, generate_drawn, generate_drawn_pair (webui/demo.py).
Every picture passes SD 1.5's safety checker and carries an invisible watermark and "AI-generated"
metadata; --no-safety-checker and --no-watermark exist for research use only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import gradio as gr

from portrait.control import CONTROLS
from portrait.defaults import PAPER_GUIDANCE, PAPER_STEPS
from portrait.demo import DEMO_MODEL, demo_available
from portrait.engine import TINY, add_model_arguments, demo_settings, identity_model_line, load_engine, model_source
from portrait.errors import MissingWeightsError
from portrait.exits import CommandParser, port, positive_int
from portrait.exits import run as run_command
from portrait.images import load_image
from portrait.loras import LCM_LORA_ID, parse_lora
from portrait.prompts import EMOTION_WORDS
from portrait.styles import NO_STYLE as NO_TEMPLATE
from portrait.styles import style_names
from webui.adapters import NO_STYLE, Adapters
from webui.demo import DemoService, build_demo_app, demo_banner
from webui.editing import REGIONS, PhotoEdits
from webui.faces import FACE_TTL_SECONDS
from webui.handlers import ASPECTS, CUSTOM_WORD, NO_EXPRESSION, Limits, PortraitService
from webui.inputs import Number, Slider
from webui.previews import InMemoryImage
from webui.selfies import SelfieChecks
from webui.uploads import FaceUpload, delete_uploads_of_refused_requests
from webui.wiring import inputs_for

logger = logging.getLogger("portrait.app")

ASSETS = Path(__file__).resolve().parent / "assets"
EXAMPLES = json.loads((ASSETS / "prompts.json").read_text())
CONSENT = (
    "Only upload photos of yourself, or of people who agreed. Your photo is deleted within your request; "
    "only the face's encoding (no picture) stays in memory, for 15 minutes."
)
TINY_BANNER = (
    "⚠️ **Running on a tiny untrained model: the pictures are noise.** "
    "To get real portraits, install the weights (README, 'Weights') and restart without `--tiny`."
)
UNTRAINED_BANNER = (
    "⚠️ **No PortraitBooth weights loaded: STEA is untrained, so pictures follow the prompt but not the face.** "
    "Pass `--portrait-weights` (README, 'Weights')."
)
CSS = ".banner {background: #fff4e5; border: 1px solid #f0a040; border-radius: 8px; padding: 8px 12px;}"

try:  # Hugging Face ZeroGPU Spaces: borrow a GPU for the length of a generation
    import spaces

    gpu = spaces.GPU(duration=120)
except ImportError:

    def gpu(handler):
        return handler


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = CommandParser(prog="app.py", description="PortraitBooth web app")
    add_model_arguments(parser)
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=port, default=env("GRADIO_SERVER_PORT", "7860"))
    parser.add_argument("--share", action="store_true", help="public gradio.live link")
    parser.add_argument(
        "--max-queue", type=positive_int, default=16, help="requests waiting at most; more get 'queue full'"
    )
    parser.add_argument("--concurrency", type=positive_int, default=1, help="generations running at once (GPU memory)")
    parser.add_argument("--max-images", type=positive_int, default=4)
    parser.add_argument("--max-sessions", type=positive_int, default=200,
                        help="sessions whose state Gradio keeps (~170 KB each for this layout), least recently used dropped first")  # fmt: skip
    parser.add_argument(
        "--lcm-lora", default=env("PORTRAIT_LCM_LORA"),
        help=f"LCM-LoRA behind the Fast toggle, when it loads (folder, file or hub id; default {LCM_LORA_ID}, none on the tiny preset)",
    )  # fmt: skip
    parser.add_argument("--lora", action="append", type=parse_lora, default=[], metavar="PATH_OR_ID[:SCALE]",
                        help="a style LoRA offered under Advanced, repeatable")  # fmt: skip
    return parser.parse_args(argv)


def load_service(args: argparse.Namespace) -> tuple[PortraitService, str | None]:
    """The service and the banner to show. The model, in this order: the one a flag names (--tiny, --demo);
    else Stable Diffusion (with PortraitBooth weights when given) when it loads; else the offline demo of
    drawn people (assets/demo); else, if that is missing too, the tiny preset. One line says which and why."""
    source = model_source(args)
    if args.demo:
        return demo_service(args, source, "--demo was given")
    banner = TINY_BANNER if args.tiny else None
    try:
        pipe = load_engine(source)
    except MissingWeightsError as error:
        if demo_available():
            return demo_service(args, model_source(args, **demo_settings()), f"no Stable Diffusion base: {error}")
        logger.warning("Serving the tiny preset (noise), since assets/demo is missing too: %s", error)
        source = dataclasses.replace(source, base=TINY, portrait_weights=None, identity_model=None)
        pipe = load_engine(source)
        banner = f"{TINY_BANNER}<br>Missing: {error}"
    weights = f" with PortraitBooth weights {source.portrait_weights}" if source.portrait_weights else ""
    logger.info("Serving %s", f"{source.base}{weights}" if source.base != TINY else "the tiny preset: noise")
    lcm = args.lcm_lora if args.lcm_lora is not None else (None if source.base == TINY else LCM_LORA_ID)
    if banner is None and not pipe.stea.is_trained:
        banner = UNTRAINED_BANNER
    banner = "<br>".join(
        line for line in (banner, identity_model_line(pipe, source)) if line
    )  # which model runs, and its licence
    adapters = Adapters.load(pipe, lcm or None, args.lora)
    example = load_image(ASSETS / "faces" / "astronaut.png")  # assets/ holds the app's examples (assets/README.md)
    service = PortraitService(
        pipe, Limits(max_images=args.max_images), example, adapters, random_controlnets=source.is_preset
    )
    return service, banner


def demo_service(args: argparse.Namespace, source, why: str) -> tuple[DemoService, str]:
    pipe = load_engine(source)
    logger.info("Serving the offline demo, a toy model of drawn people (%s), because %s", DEMO_MODEL, why)
    service = DemoService(pipe, Limits(max_images=args.max_images))
    return service, demo_banner(service)


def generation_controls(service: PortraitService, aspect: str) -> dict:
    """Negative prompt, size, count, seed, fast mode and the Advanced settings: the same on both tabs."""
    limits, adapters = service.limits, service.adapters
    controls = {
        "negative_prompt": gr.Textbox(label="Negative prompt", value="", placeholder="what to avoid, e.g. blurry")
    }
    with gr.Row():
        controls["aspect"] = gr.Dropdown(list(ASPECTS), value=aspect, label="Size")
        controls["style_template"] = gr.Dropdown(style_names(), value=NO_TEMPLATE, label="Style")
    controls["num_images"] = Slider(1, limits.max_images, value=1, step=1, label="Number of images")
    with gr.Row():
        controls["seed"] = Number(value=0, precision=0, label="Seed")
        controls["randomize_seed"] = gr.Checkbox(value=True, label="Random seed")
    controls["fast"] = gr.Checkbox(value=False, label="Fast (LCM, 6 steps)", visible=adapters.lcm is not None)
    with gr.Accordion("Advanced", open=False):
        controls["steps"] = Slider(1, limits.max_steps, value=PAPER_STEPS, step=1, label="Steps")
        controls["guidance"] = Slider(1.0, 15.0, value=PAPER_GUIDANCE, step=0.5, label="Guidance scale")
        styles = [NO_STYLE, *adapters.styles]
        controls["style"] = gr.Dropdown(styles, value=NO_STYLE, label="Style LoRA", visible=len(styles) > 1)
        controls["detailer"] = gr.Checkbox(
            value=True, label="Face detailer: re-draw faces smaller than 1/5 of the picture"
        )
        gr.Markdown("**Pose or layout from a picture** (ControlNet)")
        with gr.Row():
            controls["control_image"] = FaceUpload(label="Control picture", type="filepath", image_mode=None, sources=["upload"],
                                                   height=160)  # fmt: skip
            with gr.Column():
                controls["control"] = gr.Radio(list(CONTROLS), value="canny", label="Take from it")
                controls["control_scale"] = Slider(0.0, 2.0, value=1.0, step=0.05, label="Control strength")
    return controls


def face_input(label: str) -> tuple[FaceUpload, InMemoryImage, gr.Markdown, gr.State]:
    face = FaceUpload(label=label, type="filepath", image_mode=None, sources=["upload", "webcam"], height=280)
    gr.Markdown(CONSENT, elem_classes="consent")
    preview = InMemoryImage(label="Detected face", interactive=False, height=200, format="png")  # never on disk
    message = gr.Markdown()
    remembered = gr.State(None, time_to_live=FACE_TTL_SECONDS)  # the name of the face's encoding (webui/faces.py)
    return face, preview, message, remembered


def edit_tab(service: PortraitService) -> None:
    """ "Your photo": the selfie's person painted into a photo (the face, a painted region) or the photo restyled."""
    edits = PhotoEdits(service)
    expressions = [NO_EXPRESSION, *EMOTION_WORDS]
    with gr.Row():
        with gr.Column():
            face, preview, message, remembered = face_input("Your selfie")
        with gr.Column():
            photo = gr.ImageEditor(label="Your photo (paint where you should appear)", type="filepath", height=320,
                                   sources=["upload"], elem_id="edit_photo")  # fmt: skip
            region = gr.Radio(list(REGIONS), value=next(iter(REGIONS)), label="Where you go")
            strength = Slider(0.0, 1.0, value=0.8, step=0.05, label="Strength (how much is re-drawn)")
            prompt = gr.Textbox(label="What you do in the photo (prompt)", value="a photo of a woman", lines=2)
            with gr.Row():
                identity_word = gr.Radio(["woman", "man", CUSTOM_WORD], value="woman", label="Who you are")
                custom_word = gr.Textbox(value="", label="Your custom identity word")
            controls = {"style_template": gr.Dropdown(style_names(), value=NO_TEMPLATE, label="Style")}
            with gr.Accordion("Advanced", open=False):
                expression = gr.Dropdown(expressions, value=NO_EXPRESSION, label="Expression")
                controls["negative_prompt"] = gr.Textbox(label="Negative prompt", value="")
                controls["num_images"] = Slider(1, service.limits.max_images, value=1, step=1, label="Number of images")
                with gr.Row():
                    controls["seed"] = Number(value=0, precision=0, label="Seed")
                    controls["randomize_seed"] = gr.Checkbox(value=True, label="Random seed")
                controls["steps"] = Slider(1, service.limits.max_steps, value=PAPER_STEPS, step=1, label="Steps")
                controls["guidance"] = Slider(1.0, 15.0, value=PAPER_GUIDANCE, step=0.5, label="Guidance scale")
            run = gr.Button("Put me in the photo", variant="primary", elem_id="generate_edit")
        with gr.Column():
            gallery = gr.Gallery(label="Edited photos", format="png", columns=1, elem_id="edit_gallery")
            info = gr.Markdown(elem_id="edit_info")
    face.input(
        gpu(service.detect_face),
        face,
        [preview, message, remembered],
        api_name="detect_face_for_photo_edit",
        api_visibility="private",
        concurrency_id="faces",
    )
    inputs = dict(face=face, photo=photo, prompt=prompt, region=region, strength=strength, identity_word=identity_word,
                  custom_word=custom_word, expression=expression, remembered_face=remembered, **controls)  # fmt: skip
    run.click(
        gpu(edits.edit), inputs_for(edits.edit, inputs), [gallery, info], api_name="edit_photo", concurrency_id="gpu"
    )


def build_app(service: PortraitService, banner: str | None) -> gr.Blocks:
    expressions = [NO_EXPRESSION, *EMOTION_WORDS]
    with gr.Blocks(title="PortraitBooth", delete_cache=(300, 600)) as demo:
        gr.Markdown("# PortraitBooth\nPortraits that look like you, from one selfie and a prompt. No fine-tuning.")
        if banner:
            gr.Markdown(banner, elem_classes="banner", elem_id="banner")

        with gr.Tab("Single portrait"):
            with gr.Row():
                with gr.Column():
                    face, preview, message, remembered = face_input("Your selfie")
                    example = gr.Button("Use the example face (astronaut)", size="sm")
                    with gr.Accordion("More photos of you (up to 3, averaged)", open=False):
                        more_faces = gr.File(
                            label="More photos", file_count="multiple", file_types=["image"], type="filepath"
                        )
                        selfies = gr.Gallery(label="Your photos, checked", columns=4, height=150, format="png")
                        selfie_note = gr.Markdown(elem_id="selfie_note")
                with gr.Column():
                    prompt = gr.Textbox(label="Prompt", placeholder=EXAMPLES["single"][0], lines=2)
                    gr.Examples([[p] for p in EXAMPLES["single"]], inputs=[prompt], label="Example prompts")
                    with gr.Row():
                        identity_word = gr.Radio(
                            ["woman", "man", CUSTOM_WORD], value="woman", label="Who is in the photo"
                        )
                        custom_word = gr.Textbox(value="", label="Custom identity word", placeholder="e.g. girl")
                    hint = gr.Markdown()
                    expression = gr.Dropdown(expressions, value=NO_EXPRESSION, label="Expression")
                    controls = generation_controls(service, "Square 1:1")
                    with gr.Accordion("Identity strength", open=False):
                        identity_start = Slider(
                            0.0, 0.9, value=service.pipe.stea.default_identity_start(50), step=0.02,
                            label="Start the face after this share of the steps (0 = PortraitBooth's paper; FastComposer's demo: 0.26)",
                        )  # fmt: skip
                    with gr.Row():
                        run = gr.Button("Generate", variant="primary", elem_id="generate")
                        stop = gr.Button("Stop", variant="stop")
                with gr.Column():
                    gallery = gr.Gallery(label="Portraits", format="png", columns=2, elem_id="gallery")
                    info = gr.Markdown(elem_id="info")

        with gr.Tab("Two people", elem_id="pair_tab"):
            with gr.Row():
                with gr.Column():
                    face_a, preview_a, message_a, remembered_a = face_input("Person A (left)")
                with gr.Column():
                    face_b, preview_b, message_b, remembered_b = face_input("Person B (right)")
                with gr.Column():
                    pair_prompt = gr.Textbox(label="Scene prompt", value=EXAMPLES["pair"][0], lines=2)
                    gr.Examples([[p] for p in EXAMPLES["pair"]], inputs=[pair_prompt], label="Example prompts")
                    with gr.Row():
                        word_a = gr.Radio(["man", "woman"], value="man", label="Person A is a")
                        expression_a = gr.Dropdown(expressions, value=NO_EXPRESSION, label="A's expression")
                    with gr.Row():
                        word_b = gr.Radio(["man", "woman"], value="woman", label="Person B is a")
                        expression_b = gr.Dropdown(expressions, value=NO_EXPRESSION, label="B's expression")
                    split = Slider(0.2, 0.8, value=0.5, step=0.05, label="Where A ends and B begins")
                    pair_controls = generation_controls(service, "Landscape 4:3")
                    regions = gr.Image(label="Regions", interactive=False, height=180, format="png")
                    with gr.Row():
                        run_pair = gr.Button("Generate", variant="primary", elem_id="generate_pair")
                        stop_pair = gr.Button("Stop", variant="stop")
                with gr.Column():
                    pair_gallery = gr.Gallery(label="Pictures", format="png", columns=1, elem_id="pair_gallery")
                    pair_info = gr.Markdown(elem_id="pair_info")

        with gr.Tab("Your photo", elem_id="edit_tab"):
            edit_tab(service)

        detected = [preview, message, remembered]
        face.input(gpu(service.detect_face), face, detected, api_name="detect_face", concurrency_id="faces")
        example.click(service.use_example, None, [face, *detected], api_visibility="private", concurrency_id="faces")
        for upload, outputs in (
            (face_a, [preview_a, message_a, remembered_a]),
            (face_b, [preview_b, message_b, remembered_b]),
        ):
            upload.input(gpu(service.detect_face), upload, outputs, api_visibility="private", concurrency_id="faces")

        def follow_changes(handler, inputs: list, output) -> None:
            """`output` recomputed whenever one of `inputs` changes (cheap, so outside the queue)."""
            gr.on([c.change for c in inputs], handler, inputs, output, queue=False, api_visibility="private")

        hint_inputs = inputs_for(service.identity_hint, dict(prompt=prompt, identity_word=identity_word, custom_word=custom_word,
                                                             expression=expression))  # fmt: skip
        follow_changes(service.identity_hint, hint_inputs, hint)
        region_inputs = inputs_for(service.regions, dict(split=split, aspect=pair_controls["aspect"], identity_word_a=word_a,
                                                         identity_word_b=word_b))  # fmt: skip
        follow_changes(service.regions, region_inputs, regions)
        demo.load(service.regions, region_inputs, regions, queue=False, api_visibility="private")

        checks = SelfieChecks(service)
        more_faces.upload(gpu(checks.check), inputs_for(checks.check, dict(face=face, more_faces=more_faces, remembered_face=remembered)),
                          [selfies, selfie_note], api_name="check_selfies", concurrency_id="faces")  # fmt: skip
        single = dict(more_faces=more_faces, face=face, prompt=prompt, identity_word=identity_word, custom_word=custom_word, expression=expression,
                      identity_start=identity_start, remembered_face=remembered, **controls)  # fmt: skip
        run.click(gpu(service.generate), inputs_for(service.generate, single), [gallery, info], api_name="generate",
                  concurrency_id="gpu")  # fmt: skip
        pair = dict(face_a=face_a, face_b=face_b, prompt=pair_prompt, identity_word_a=word_a, expression_a=expression_a,
                    identity_word_b=word_b, expression_b=expression_b, split=split, remembered_face_a=remembered_a,
                    remembered_face_b=remembered_b, **pair_controls)  # fmt: skip
        run_pair.click(gpu(service.generate_pair), inputs_for(service.generate_pair, pair), [pair_gallery, pair_info],
                       api_name="generate_pair", concurrency_id="gpu")  # fmt: skip
        for button in (stop, stop_pair):
            button.click(service.stop, None, None, queue=False, api_visibility="private")
    return demo


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    service, banner = load_service(args)
    demo = build_demo_app(service, banner) if isinstance(service, DemoService) else build_app(service, banner)
    demo.queue(max_size=args.max_queue, default_concurrency_limit=args.concurrency)
    delete_uploads_of_refused_requests(demo)
    # show_error: a request that Gradio itself refuses (a path that was not uploaded, a value not among the
    # choices) hears why; the handlers turn their own failures into one sentence (webui/errors.py).
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size="40mb", css=CSS, show_error=True,
                state_session_capacity=args.max_sessions)  # fmt: skip


if __name__ == "__main__":
    sys.exit(run_command(main, prog="app.py"))
