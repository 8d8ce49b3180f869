"""The app's "Your photo" tab: the person of a selfie put into a photo (inpainting), or the photo restyled.

The photo arrives from Gradio's image editor as files: the photo itself and the layer the user painted on.
Both are read by the engine's own loader and deleted from disk in the same request, as selfies are.
"""

from __future__ import annotations

import io

import gradio as gr
import numpy as np
from PIL import Image

from portrait.defaults import PAPER_GUIDANCE, PAPER_STEPS
from portrait.edit import FACE_REGION, edit_photo
from portrait.errors import InvalidImageError
from portrait.images import load_image
from portrait.styles import NO_STYLE, styled

from .adapters import NO_STYLE as NO_LORA
from .errors import user_errors
from .handlers import NO_EXPRESSION, PortraitService, Sampling, chosen_expression, chosen_word
from .uploads import discard

REGIONS = {"The face in my photo": FACE_REGION, "Where I painted": "painted", "The whole photo (restyle)": None}


class PhotoEdits:
    """Request handlers of the edit tab, on the service's shared pipeline, limits and upload reader."""

    def __init__(self, service: PortraitService):
        self.service = service

    @user_errors
    def edit(
        self,
        photo: dict | None,  # may name the selfie's own file: a request reads each file once (webui/uploads.py)
        face: str | bytes | None,
        prompt: str,
        region: str = "The face in my photo",
        strength: float = 0.8,
        identity_word: str = "woman",
        custom_word: str = "",
        expression: str = NO_EXPRESSION,
        negative_prompt: str = "",
        num_images: int = 1,
        seed: int = 0,
        randomize_seed: bool = True,
        steps: int = PAPER_STEPS,
        guidance: float = PAPER_GUIDANCE,
        style_template: str = NO_STYLE,
        remembered_face: str | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list, str]:
        """Your face in your photo: a gallery of (image, caption) and a note."""
        service = self.service
        if region not in REGIONS:
            raise gr.Error(f"Region must be one of: {', '.join(REGIONS)}.")
        if not 0 <= strength <= 1:
            raise gr.Error("Strength must be between 0 and 1.")
        prompt, negative_prompt = styled(style_template, prompt, negative_prompt)
        settings = Sampling(
            negative_prompt, num_images, seed, randomize_seed, steps, guidance, style_template=style_template
        )
        run, sampling = service._start(request, progress, settings, False, NO_LORA)
        (selfie,) = service._faces([face], [remembered_face], ["your"])
        image, painted = self.read_photo(photo)
        mask = painted if REGIONS[region] == "painted" else REGIONS[region]
        if mask is None and REGIONS[region] == "painted":
            raise gr.Error("Paint over the part of the photo where you should appear, or choose another region.")
        pipe = service._request_pipeline(False)
        encoding = selfie.encoding()
        arguments = {name: value for name, value in sampling.items() if name not in ("width", "height")}
        result = edit_photo(
            pipe, image, prompt, encoding, mask, strength=strength, identity_word=chosen_word(identity_word, custom_word),
            expression=chosen_expression(expression), **arguments,
        )  # fmt: skip
        run.size = result.images[0].size
        what = "restyled" if mask is None else f"inpainted ({region.lower()})"
        run.settings += f" · photo {what}, strength {strength:g}"
        return service._finish(run, result, [note for note in (result.prompts[0].notice,) if note])

    def read_photo(self, photo: dict | None) -> tuple[Image.Image, np.ndarray | None]:
        """The photo, and where the user painted on it (None when nothing was painted); the files are deleted."""
        if not photo or not photo.get("background"):
            raise gr.Error("Upload the photo to put yourself into.")
        layers = [layer for layer in photo.get("layers") or [] if layer]
        try:
            (image,) = self.service.uploads.read([photo["background"]])
            if image is None:
                raise gr.Error("Upload the photo to put yourself into.")
            return image, painted_area(layers[0], image.size) if layers else None
        finally:
            for path in (photo.get("composite"), *layers):  # the editor's own copies: not kept either
                if isinstance(path, str):
                    discard(path)


def painted_area(layer: str | bytes, size: tuple[int, int]) -> np.ndarray | None:
    """(H, W) 0/1 where the layer's paint is (its alpha), at the photo's size; None when nothing was painted."""
    load_image(layer)  # refused with a sentence when it is not a sound image of a sane size
    try:
        with Image.open(layer if isinstance(layer, str) else io.BytesIO(layer)) as opened:
            alpha = opened.convert("RGBA").getchannel("A").resize(size, Image.NEAREST)
    except (OSError, ValueError) as error:
        raise InvalidImageError("Could not read the painted region") from error
    area = (np.asarray(alpha) > 0).astype(np.float32)
    return area if area.any() else None
