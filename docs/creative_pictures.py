"""The README's "Creative tools" pictures, one per feature, made on the tiny preset (random weights, offline).

    python docs/creative_pictures.py        # writes docs/creative-*.png

The tiny model draws noise, so each picture shows what a tool does to which pixels (and captions it),
not how a trained model's result looks; every panel says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageEnhance

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from portrait.control import control_map, controlled, load_controlnet  # noqa: E402
from portrait.detailer import FaceDetailer  # noqa: E402
from portrait.edit import FACE_REGION, edit_photo, face_region  # noqa: E402
from portrait.examples import example_face  # noqa: E402
from portrait.face import FaceAnalyzer, MTCNNDetector  # noqa: E402
from portrait.pipeline import PortraitBoothPipeline  # noqa: E402
from portrait.selfies import encode_checked  # noqa: E402
from portrait.styles import styled  # noqa: E402
from webui.previews import face_preview  # noqa: E402

PANEL = 224
TINY = "tiny random model"


def strip(panels: list[tuple[Image.Image, str]], title: str) -> Image.Image:
    """Panels side by side, each with its label, under a title."""
    width = PANEL * len(panels)
    sheet = Image.new("RGB", (width, PANEL + 56), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 4), title, fill=(0, 0, 0))
    for index, (image, label) in enumerate(panels):
        sheet.paste(image.convert("RGB").resize((PANEL, PANEL), Image.NEAREST), (index * PANEL, 20))
        draw.text((index * PANEL + 4, PANEL + 26), label, fill=(0, 0, 0))
    return sheet


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def main() -> None:
    pipe = PortraitBoothPipeline.from_random_preset("tiny")
    pipe.set_progress_bar_config(disable=True)
    pipe.face_analyzer = FaceAnalyzer(MTCNNDetector())
    photo = example_face("astronaut")
    face = pipe.encode_faces(photo)
    out = ROOT / "docs"

    canvas = Image.new("RGB", (256, 256), (120, 140, 160))
    canvas.paste(photo.resize((128, 128), Image.LANCZOS), (20, 100))
    prompts = pipe.identity_prompts("a photo of a woman")
    detailed, report = FaceDetailer(pipe).detail(canvas, prompts, [face], num_inference_steps=20)
    (done,) = report.detailed
    boxed = detailed.copy()
    ImageDraw.Draw(boxed).rectangle(done.crop, outline=(255, 0, 0))
    strip([(canvas, "before: a 25-px face"), (detailed, f"after ({TINY})"), (boxed, "the re-drawn crop"),
           (detailed.crop(done.crop), "crop, enlarged")], "Face detailer").save(out / "creative-detailer.png")  # fmt: skip

    inpainted = edit_photo(
        pipe, photo, "a photo of a woman", face, FACE_REGION, num_inference_steps=20, generator=generator()
    )
    restyled = edit_photo(
        pipe, photo, "a photo of a woman", face, strength=0.5, num_inference_steps=20, generator=generator()
    )
    strip([(photo, "your photo"), (face_region(pipe, photo), "default region: the face"),
           (inpainted.images[0], f"inpainted ({TINY})"), (restyled.images[0], f"restyled 0.5 ({TINY})")],
          "Your face in your photo").save(out / "creative-edit.png")  # fmt: skip

    edges = control_map("canny", photo)
    controlnet = load_controlnet("canny", pipe, random_weights=True)
    plain = pipe("a photo of a woman", face=face, num_inference_steps=20, generator=generator()).images[0]
    steered = controlled(pipe, controlnet, edges)(
        "a photo of a woman", face=face, num_inference_steps=20, generator=generator()
    ).images[0]
    strip([(photo, "reference picture"), (edges, "canny map (OpenCV)"), (plain, f"no control ({TINY})"),
           (steered, f"canny ControlNet ({TINY})")], "Pose and layout from a picture").save(out / "creative-control.png")  # fmt: skip

    panels = []
    for style in ("Cinematic", "Film noir", "Watercolour", "Neon punk"):
        prompt, negative = styled(style, "a photo of a woman")
        image = pipe(prompt, face=face, negative_prompt=negative, num_inference_steps=20, generator=generator()).images[
            0
        ]
        panels.append((image, f"{style} ({TINY})"))
    strip(panels, "Styles: the same seed in four templates").save(out / "creative-styles.png")

    from skimage import data

    cameraman = Image.fromarray(data.camera()).convert("RGB")
    _, check, analyses = encode_checked(pipe, [photo, ImageEnhance.Brightness(photo).enhance(1.2), cameraman])
    labels = [
        f"photo {i + 1}: {s:.2f} {'left out' if i in check.flagged else 'kept'}"
        for i, s in enumerate(check.similarities)
    ]
    strip([(face_preview(a), label) for a, label in zip(analyses, labels)],
          f"Several selfies: similarity to the others (tiny random identity encoder), under {check.threshold:.2f} is left out"
          ).save(out / "creative-selfies.png")  # fmt: skip
    print(f"wrote {', '.join(p.name for p in sorted(out.glob('creative-*.png')))}")


if __name__ == "__main__":
    main()
