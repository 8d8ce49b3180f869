"""What the app does for each request: read the selfie (and forget it), generate, explain failures.

Every handler turns the engine's errors into `gr.Error` with the engine's own message, so a bad
upload or prompt shows a clear sentence in the browser and in API clients, and the server carries on.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gradio as gr
import torch
from gradio.data_classes import FileData
from gradio_client.utils import decode_base64_to_binary
from PIL import Image

from portrait.errors import NoFaceError, PortraitError
from portrait.images import load_image
from portrait.multi import Person, describe_region, generate_people
from portrait.pipeline import PortraitBoothPipeline
from portrait.prompts import build_identity_prompt
from portrait.runtime import seeded_generators

from .previews import face_preview, regions_preview

logger = logging.getLogger(__name__)

ASPECTS = {"Square 1:1": (1, 1), "Portrait 3:4": (3, 4), "Landscape 4:3": (4, 3), "Tall 2:3": (2, 3), "Wide 3:2": (3, 2)}
NO_EXPRESSION = "none"
CUSTOM_WORD = "custom"
OUT_OF_MEMORY = "The GPU ran out of memory. Try fewer images or a smaller size."
KEPT_SIDE = 2048  # longest side of a photo held in memory between requests


@dataclass
class Run:
    """One generation request, from its checks to its gallery."""

    session: str
    seeds: list[int]
    settings: str
    size: tuple[int, int]  # width, height
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_images: int = 4
    max_steps: int = 100


class FaceUpload(gr.Image):
    """gr.Image whose upload reaches the handler undecoded: our own loader reads it (with its clear
    errors for corrupt, huge or odd images) and deletes it right after."""

    is_template = True  # same browser component as gr.Image

    def preprocess(self, payload: FileData | None) -> str | bytes | None:
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            return decode_base64_to_binary(payload.url)[0]
        return payload.path


class UploadReader:
    """Decodes uploads and deletes them from disk at once: selfies are not kept on the server.

    Gradio stores uploads by content, so two requests carrying the same bytes share one file; the
    second may find it already deleted by the first. Decoded photos therefore stay in memory, never
    on disk, for `keep_seconds`, keyed by that content-named path.
    """

    def __init__(self, keep_seconds: float = 300.0):
        self.keep_seconds = keep_seconds
        self._recent: dict[str, tuple[float, Image.Image | PortraitError]] = {}  # a failed read keeps its error
        self._lock = threading.Lock()

    def read(self, uploads: list[str | bytes | None]) -> list[Image.Image | None]:
        """One decoded photo (or None) per upload; the same upload given twice is decoded once."""
        decoded: dict[str | bytes, Image.Image | None] = {}
        for upload in uploads:
            if upload is not None and upload not in decoded:
                decoded[upload] = shrink(load_image(upload)) if isinstance(upload, bytes) else self._read_file(upload)
        return [None if upload is None else decoded[upload] for upload in uploads]

    def _read_file(self, upload: str) -> Image.Image | None:
        path = Path(upload)
        now = time.monotonic()
        with self._lock:
            self._recent = {key: entry for key, entry in self._recent.items() if now - entry[0] < self.keep_seconds}
            if not path.is_file():
                entry = self._recent.get(upload)
                if entry and isinstance(entry[1], PortraitError):
                    raise entry[1]  # this upload failed before: never fall back to an older photo
                return entry[1] if entry else None  # None: read by an earlier step, past keeping
            try:
                image = shrink(load_image(path))
            except PortraitError as error:
                self._recent[upload] = (now, error)
                raise
            finally:
                self._delete_if_uploaded(path)
            self._recent[upload] = (now, image)
            return image

    @staticmethod
    def _delete_if_uploaded(path: Path) -> None:
        if path.resolve().is_relative_to(Path(gr.utils.get_upload_folder()).resolve()):
            path.unlink(missing_ok=True)
            if path.parent.is_dir() and not any(path.parent.iterdir()):
                path.parent.rmdir()


def shrink(image: Image.Image, side: int = KEPT_SIDE) -> Image.Image:
    """A copy small enough to keep in memory for a session; faces stay far above what φ needs."""
    if max(image.size) <= side:
        return image
    scale = side / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)


def user_errors(handler: Callable) -> Callable:
    """Show engine errors as they are, out-of-memory as advice, anything else as a short apology."""

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except PortraitError as error:
            raise gr.Error(str(error)) from error
        except torch.OutOfMemoryError as error:
            torch.cuda.empty_cache()
            raise gr.Error(OUT_OF_MEMORY) from error
        except Exception as error:
            logger.exception("Request failed")
            raise gr.Error(f"Something went wrong ({type(error).__name__}); the details are in the server log.") from error

    return wrapped


def canvas_size(aspect: str, native: int) -> tuple[int, int]:
    """(width, height) of about native² pixels in the given aspect, in steps the models accept."""
    ratio_w, ratio_h = ASPECTS.get(aspect, (1, 1))
    step = max(16, native // 8)
    scale = native / (ratio_w * ratio_h) ** 0.5
    return max(step, round(ratio_w * scale / step) * step), max(step, round(ratio_h * scale / step) * step)


def chosen_word(identity_word: str, custom_word: str) -> str:
    if identity_word == CUSTOM_WORD:
        if not custom_word.strip():
            raise gr.Error("Type the custom identity word (the word of your prompt that should get the face).")
        return custom_word.strip()
    return identity_word


def chosen_expression(expression: str | None) -> str | None:
    return None if expression in (None, "", NO_EXPRESSION) else expression


class PortraitService:
    """The app's request handlers around one shared pipeline."""

    def __init__(self, pipe: PortraitBoothPipeline, limits: Limits = Limits(), example: Image.Image | None = None):
        self.pipe = pipe
        self.limits = limits
        self.example = example
        self.uploads = UploadReader()
        self.native_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.stopping: set[str] = set()

    # ------------------------------------------------------------------ faces
    @user_errors
    def detect_face(self, face: str | bytes | None) -> tuple[Image.Image | None, str, Image.Image | None]:
        """Face preview (box and landmarks), a message, and the decoded photo kept for this session."""
        (image,) = self.uploads.read([face])
        if image is None:
            return None, "", None
        return self._describe(image)

    @user_errors
    def use_example(self) -> tuple[Image.Image, Image.Image, str, Image.Image]:
        """The bundled example photo, shown as if uploaded, with its face preview."""
        return (self.example, *self._describe(self.example))

    def _describe(self, image: Image.Image) -> tuple[Image.Image, str, Image.Image]:
        analysis = self.pipe.face_analyzer.analyze(image)
        message = analysis.notice or "Face found."
        return face_preview(analysis), f"{message} ({image.width}×{image.height} photo)", image

    def _faces(self, uploads: list, remembered: list[Image.Image | None], whose: list[str]) -> list[Image.Image]:
        """This request's uploads, else the photos this session uploaded before."""
        images = [image or kept for image, kept in zip(self.uploads.read(uploads), remembered)]
        for image, who in zip(images, whose):
            if image is None:
                raise NoFaceError(f"Upload a photo of {who} face first.")
        return images

    # ------------------------------------------------------------------ generation
    def _request_pipeline(self) -> PortraitBoothPipeline:
        """The shared models with this request's own scheduler and stop flag, so that several
        generations may run at once (--concurrency) without stepping on each other's state."""
        scheduler = self.pipe.scheduler.from_config(self.pipe.scheduler.config)
        pipe = PortraitBoothPipeline(**{**self.pipe.components, "scheduler": scheduler})
        pipe.face_analyzer = self.pipe.face_analyzer
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _start(
        self,
        request: gr.Request | None,
        progress: gr.Progress,
        negative_prompt: str,
        num_images: int,
        seed: int,
        randomize_seed: bool,
        steps: int,
        guidance: float,
        aspect: str,
    ) -> tuple[Run, dict]:
        """Check the request's numbers; the run's record and the sampling arguments both modes share."""
        if not 1 <= num_images <= self.limits.max_images:
            raise gr.Error(f"Number of images must be between 1 and {self.limits.max_images}.")
        if not 1 <= steps <= self.limits.max_steps:
            raise gr.Error(f"Steps must be between 1 and {self.limits.max_steps}.")
        if not randomize_seed and (seed is None or not 0 <= seed < 2**63):
            raise gr.Error("Seed must be a whole number from 0 up, or tick 'Random seed'.")
        first = random.randrange(2**31) if randomize_seed else int(seed)
        run = Run(
            session=request.session_hash if request else "",
            seeds=[first + index for index in range(int(num_images))],
            settings=f"{int(steps)} steps · guidance {guidance}",
            size=canvas_size(aspect, self.native_size),
        )
        self.stopping.discard(run.session)

        def on_step(pipe, step, timestep, tensors):
            progress((step + 1, int(steps)), desc="Generating", unit="steps")
            if run.session in self.stopping:
                pipe._interrupt = True
            return {}

        sampling = dict(
            negative_prompt=negative_prompt or None,
            num_inference_steps=int(steps),
            guidance_scale=guidance,
            num_images_per_prompt=len(run.seeds),
            width=run.size[0],
            height=run.size[1],
            generator=seeded_generators(run.seeds),
            callback_on_step_end=on_step,
        )
        return run, sampling

    def _finish(self, run: Run, images: list, prompt: str, notes: list[str]) -> tuple[list, str]:
        """Gallery items captioned with their own seeds, and the note; nothing if the user stopped."""
        if run.session in self.stopping:
            self.stopping.discard(run.session)
            return [], "Stopped."
        width, height = run.size
        captions = [f"seed {seed} · {run.settings} · {width}×{height} · {prompt}" for seed in run.seeds]
        elapsed = time.perf_counter() - run.started
        notes.append(f"{len(images)} image{'s' if len(images) > 1 else ''} in {elapsed:.1f} s.")
        return list(zip(images, captions)), " ".join(notes)

    @user_errors
    def generate(
        self,
        face: str | bytes | None,
        prompt: str,
        identity_word: str = "woman",
        custom_word: str = "",
        expression: str = NO_EXPRESSION,
        negative_prompt: str = "",
        num_images: int = 1,
        seed: int = 0,
        randomize_seed: bool = True,
        steps: int = 50,
        guidance: float = 5.0,
        aspect: str = "Square 1:1",
        identity_start: float = 0.0,
        remembered_face: Image.Image | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list, str]:
        """One person: a gallery of (image, caption) and a note on what happened."""
        run, sampling = self._start(request, progress, negative_prompt, num_images, seed, randomize_seed, steps, guidance, aspect)
        (photo,) = self._faces([face], [remembered_face], ["your"])
        pipe = self._request_pipeline()
        encoding = pipe.encode_faces(photo)
        result = pipe(
            prompt,
            face=encoding,
            identity_word=chosen_word(identity_word, custom_word),
            expression=chosen_expression(expression),
            identity_start=identity_start,
            **sampling,
        )
        placed = result.prompts[0]
        notes = [note for note in (encoding.analyses[0].notice, placed.notice) if note]
        return self._finish(run, result.images, placed.text, notes)

    @user_errors
    def generate_pair(
        self,
        face_a: str | bytes | None,
        face_b: str | bytes | None,
        prompt: str,
        identity_word_a: str = "man",
        expression_a: str = NO_EXPRESSION,
        identity_word_b: str = "woman",
        expression_b: str = NO_EXPRESSION,
        split: float = 0.5,
        negative_prompt: str = "",
        num_images: int = 1,
        seed: int = 0,
        randomize_seed: bool = True,
        steps: int = 50,
        guidance: float = 5.0,
        aspect: str = "Landscape 4:3",
        remembered_face_a: Image.Image | None = None,
        remembered_face_b: Image.Image | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list, str]:
        """Two people, person A on the left of `split`, person B on the right."""
        run, sampling = self._start(request, progress, negative_prompt, num_images, seed, randomize_seed, steps, guidance, aspect)
        photos = self._faces([face_a, face_b], [remembered_face_a, remembered_face_b], ["person A's", "person B's"])
        pipe = self._request_pipeline()
        faces = [pipe.encode_faces(photo) for photo in photos]
        people = [
            Person(faces[0], identity_word_a or None, chosen_expression(expression_a)),
            Person(faces[1], identity_word_b or None, chosen_expression(expression_b)),
        ]
        result = generate_people(pipe, prompt, people, split=split, **sampling)
        order = sorted(p.identity_span for p in result.prompts)
        notes = [
            f"{name}: the {('first', 'second')[order.index(p.identity_span)]} '{p.identity_word}', {describe_region(mask)}."
            for name, p, mask in zip("AB", result.prompts, result.regions)
        ]
        return self._finish(run, result.images, result.prompts[0].text, notes)

    def stop(self, request: gr.Request) -> None:
        self.stopping.add(request.session_hash)

    # ------------------------------------------------------------------ live hints
    def identity_hint(self, prompt: str, identity_word: str, custom_word: str, expression: str) -> str:
        """Which word of the prompt gets the face, as the engine will read it."""
        try:
            word = custom_word.strip() if identity_word == CUSTOM_WORD else identity_word
            if not word:
                return "Type the custom identity word."
            placed = build_identity_prompt(prompt, word, expression=chosen_expression(expression))
        except PortraitError as error:
            return f"⚠️ {error}"
        start, end = placed.identity_span
        shown = f"{placed.text[:start]}**{placed.text[start:end]}**{placed.text[end:]}"
        return f"The face goes to the highlighted word: {shown}"

    def regions(self, split: float, aspect: str, identity_word_a: str, identity_word_b: str) -> Image.Image:
        width, height = canvas_size(aspect, self.native_size)
        return regions_preview(width, height, split, 0.1, (identity_word_a or "A", identity_word_b or "B"))
