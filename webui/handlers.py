"""What the app does for each request: read the selfie (and forget it, keeping its face's encoding), generate,
explain failures.

Every handler turns the engine's errors into `gr.Error` with the engine's own message (webui/errors.py),
so a bad upload or prompt shows a clear sentence in the browser and in API clients, and the server
carries on. The handlers' parameter names are the API's, and app.py wires components to them by name.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import gradio as gr
from PIL import Image

from portrait.defaults import PAPER_GUIDANCE, PAPER_STEPS
from portrait.detailer import detail_images
from portrait.errors import NoFaceError, PortraitError
from portrait.face.analyzer import FaceAnalysis
from portrait.multi import Person, PortraitBoothPeoplePipeline, describe_region
from portrait.pipeline import PortraitBoothPipeline
from portrait.prompts import build_identity_prompt
from portrait.provenance import provenance_text
from portrait.runtime import seeded_generators
from portrait.safety import FLAGGED_NOTE
from portrait.samplers import SAMPLERS, make_scheduler
from portrait.selfies import MAX_PHOTOS, encode_checked
from portrait.styles import ASPECTS, canvas_size, styled
from portrait.styles import NO_STYLE as NO_TEMPLATE

from .adapters import NO_STYLE, Adapters
from .control import Controls
from .errors import user_errors
from .faces import FaceMemory, RefusedPhoto, RememberedFace
from .inputs import as_the_ui_sends
from .previews import face_preview, regions_preview
from .uploads import ARRIVAL_SECONDS, Upload, UploadReader, decode, take

NO_EXPRESSION = "none"
CUSTOM_WORD = "custom"
EXAMPLE_KEY = "example:astronaut"


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
    max_guidance: float = 30.0


@dataclass(frozen=True)
class Sampling:
    """The sampling choices both tabs share, as the request gave them (API callers may send anything)."""

    negative_prompt: str = ""
    num_images: int = 1
    seed: int | float | None = 0
    randomize_seed: bool = True
    steps: int = PAPER_STEPS
    guidance: float = PAPER_GUIDANCE
    aspect: str = "Square 1:1"
    style_template: str = NO_TEMPLATE

    def check(self, limits: Limits) -> None:
        """A clear sentence for every number out of range (NaN and infinity fail every comparison)."""
        if not 1 <= self.num_images <= limits.max_images or self.num_images != int(self.num_images):
            raise gr.Error(f"Number of images must be a whole number between 1 and {limits.max_images}.")
        if not 1 <= self.steps <= limits.max_steps or self.steps != int(self.steps):
            raise gr.Error(f"Steps must be a whole number between 1 and {limits.max_steps}.")
        if not 0 <= self.guidance <= limits.max_guidance:
            raise gr.Error(f"Guidance must be between 0 and {limits.max_guidance:g}.")
        if not self.randomize_seed and (self.seed is None or not 0 <= self.seed < 2**63 or self.seed != int(self.seed)):
            raise gr.Error("Seed must be a whole number from 0 up, or tick 'Random seed'.")
        if self.aspect not in ASPECTS:
            raise gr.Error(f"Size must be one of: {', '.join(ASPECTS)}.")


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

    def __init__(
        self,
        pipe: PortraitBoothPipeline,
        limits: Limits = Limits(),
        example: Image.Image | None = None,
        adapters: Adapters | None = None,
        random_controlnets: bool = False,
        faces: FaceMemory | None = None,
    ):
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)  # the browser shows progress; requests' pipelines inherit this
        self.limits = limits
        self.example = example
        self.adapters = adapters or Adapters()
        self.uploads = UploadReader()
        self.controls = Controls(pipe, self.uploads, random_controlnets)
        self.faces = faces or FaceMemory()
        self.native_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.stopping: set[str] = set()

    # ------------------------------------------------------------------ faces
    @user_errors
    @as_the_ui_sends
    def detect_face(self, face: Upload | str | bytes | None) -> tuple[Image.Image | None, str, str | None]:
        """Face preview (box and landmarks), a message, and the name the face is remembered by for this session."""
        upload = Upload.of(face)
        if upload is None:
            return None, "", None
        remembered, analysis = self._read(upload)
        if remembered is None:
            raise NoFaceError("Upload a photo of your face first.")
        return self._described(remembered, analysis, upload.key)

    @user_errors
    def use_example(self) -> tuple[Image.Image, Image.Image, str, str]:
        """The bundled example photo, shown as if uploaded, with its face preview."""
        analysis = self.pipe.face_analyzer.analyze(self.example)
        remembered = RememberedFace.of(self.pipe.encode_faces(analysis), self.example.size)
        self.faces.put(EXAMPLE_KEY, remembered)
        return (self.example, *self._described(remembered, analysis, EXAMPLE_KEY))

    @staticmethod
    def _described(
        remembered: RememberedFace, analysis: FaceAnalysis | None, key: str
    ) -> tuple[Image.Image | None, str, str]:
        width, height = remembered.photo_size
        preview = None if analysis is None else face_preview(analysis)
        return preview, f"{remembered.notice or 'Face found.'} ({width}×{height} photo)", key

    def more_photos(self, uploads: list[str] | None) -> list[Image.Image]:
        """The further photos of the same person a request sent (read, then deleted from disk)."""
        if len(uploads or []) > MAX_PHOTOS - 1:
            raise gr.Error(f"Up to {MAX_PHOTOS} photos of one person: the selfie and {MAX_PHOTOS - 1} more.")
        return [image for image in self.uploads.read(list(uploads or [])) if image is not None]

    def _read(self, upload: Upload) -> tuple[RememberedFace | None, FaceAnalysis | None]:
        """The upload's face, encoded and remembered, with its analysis when the photo came with this request
        (the photo itself is gone when the request ends); None when the bytes are neither here nor remembered."""
        deadline = time.monotonic() + ARRIVAL_SECONDS
        # No file: an earlier request naming it (the face preview) read it, and remembers, or soon will, its encoding.
        while upload.data is None:
            entry = self.faces.get(upload.key)
            if isinstance(entry, RefusedPhoto):
                raise entry.error()  # this upload failed before: never fall back to an older photo
            if entry is not None:
                return entry, None
            if time.monotonic() > deadline:
                return None, None
            time.sleep(0.05)
            upload = take(upload.key)
        try:
            photo = decode(upload)
            analysis = self.pipe.face_analyzer.analyze(photo)
            remembered = RememberedFace.of(self.pipe.encode_faces(analysis), photo.size)
        except PortraitError as error:
            self.faces.put(upload.key, RefusedPhoto(str(error)))
            raise
        self.faces.put(upload.key, remembered)
        return remembered, analysis

    def _faces(self, uploads: list, remembered: list[str | None], whose: list[str]) -> list[RememberedFace]:
        """This request's uploads, else the faces this session uploaded before."""
        faces = []
        for face, kept, who in zip(uploads, remembered, whose):
            upload = Upload.of(face)
            found = None if upload is None else self._read(upload)[0]
            if found is None:
                entry = self.faces.get(kept)
                found = entry if isinstance(entry, RememberedFace) else None
            if found is None:
                raise NoFaceError(f"Upload a photo of {who} face first.")
            faces.append(found)
        return faces

    # ------------------------------------------------------------------ generation
    def _request_pipeline(
        self, fast: bool, kind: type[PortraitBoothPipeline] = PortraitBoothPipeline
    ) -> PortraitBoothPipeline:
        """The shared models with this request's own scheduler (LCM's in fast mode) and stop flag, so that
        several generations may run at once (--concurrency) without stepping on each other's state."""
        config = self.pipe.scheduler.config
        scheduler = make_scheduler("lcm", config) if fast else self.pipe.scheduler.from_config(config)
        return self.pipe.with_modules(kind, scheduler=scheduler)

    def _start(
        self, request: gr.Request | None, progress: gr.Progress, settings: Sampling, fast: bool, style: str
    ) -> tuple[Run, dict]:
        """Check the request; the run's record and the sampling arguments both modes share (fast mode
        sets its own steps and guidance, and the captions say so)."""
        self.adapters.check(fast, style)
        settings.check(self.limits)
        first = random.randrange(2**31) if settings.randomize_seed else int(settings.seed)
        if fast:
            lcm = SAMPLERS["lcm"]
            steps_and_guidance, described = lcm.arguments, f"{lcm.steps} LCM steps · guidance {lcm.guidance:g}"
        else:
            steps_and_guidance = {
                "num_inference_steps": int(settings.steps),
                "guidance_scale": float(settings.guidance),
            }
            described = f"{int(settings.steps)} steps · guidance {settings.guidance}"
        if settings.style_template != NO_TEMPLATE:
            described += f" · style {settings.style_template}"
        run = Run(
            session=request.session_hash if request else "",
            seeds=[first + index for index in range(int(settings.num_images))],
            settings=described,
            size=canvas_size(settings.aspect, self.native_size),
        )
        self.stopping.discard(run.session)

        def on_step(pipe, step, timestep, tensors):
            progress((step + 1, pipe.num_timesteps), desc="Generating", unit="steps")
            if run.session in self.stopping:
                pipe._interrupt = True
            return {}

        sampling = dict(
            negative_prompt=settings.negative_prompt or None,
            **steps_and_guidance,
            num_images_per_prompt=len(run.seeds),
            width=run.size[0],
            height=run.size[1],
            generator=seeded_generators(run.seeds),
            callback_on_step_end=on_step,
        )
        return run, sampling

    def _steered(
        self, run: Run, pipe: PortraitBoothPipeline, picture, kind: str, scale: float
    ) -> PortraitBoothPipeline:
        """`pipe` under the request's ControlNet when it sent a control picture (the caption says so)."""
        steered, described = self.controls.steer(pipe, picture, kind, scale, run.size)
        if described:
            run.settings += f" · {described}"
        return steered

    def _detail(
        self, wanted: bool, run: Run, pipe: PortraitBoothPipeline, result, faces: list, sampling: dict
    ) -> list[str]:
        """The face detailer over the pictures of `result` (replaced in place) when asked; its notes, once each."""
        if not wanted or run.session in self.stopping:
            return []
        arguments = {name: sampling[name] for name in ("negative_prompt", "num_inference_steps", "guidance_scale")}
        result.images, notes = detail_images(
            pipe, result.images, run.seeds, result.prompts, faces, result.regions, **arguments
        )
        return list(dict.fromkeys(notes))

    def _finish(self, run: Run, result, notes: list[str]) -> tuple[list, str]:
        """Gallery items captioned with their own seeds and carrying their provenance, and the note;
        nothing if the user stopped."""
        if run.session in self.stopping:
            self.stopping.discard(run.session)
            return [], "Stopped."
        width, height = run.size
        prompt = result.prompts[0].text
        captions = [f"seed {seed} · {run.settings} · {width}×{height} · {prompt}" for seed in run.seeds]
        for image, seed in zip(result.images, run.seeds):
            image.info.update(
                provenance_text({"prompt": prompt, "seed": str(seed), "settings": run.settings})
            )  # PNG text
        flagged = [seed for seed, flag in zip(run.seeds, result.nsfw_content_detected or []) if flag]
        if flagged:
            notes.append(
                f"{len(flagged)} of {len(run.seeds)} pictures were {FLAGGED_NOTE} (seed {', '.join(map(str, flagged))})."
            )
        elapsed = time.perf_counter() - run.started
        notes.append(f"{len(result.images)} image{'s' if len(result.images) > 1 else ''} in {elapsed:.1f} s.")
        return list(zip(result.images, captions)), " ".join(notes)

    @user_errors
    @as_the_ui_sends
    def generate(
        self,
        face: Upload | str | bytes | None,
        prompt: str,
        identity_word: str = "woman",
        custom_word: str = "",
        expression: str = NO_EXPRESSION,
        negative_prompt: str = "",
        num_images: int = 1,
        seed: int = 0,
        randomize_seed: bool = True,
        steps: int = PAPER_STEPS,
        guidance: float = PAPER_GUIDANCE,
        aspect: str = "Square 1:1",
        identity_start: float | None = None,
        fast: bool = False,
        style: str = NO_STYLE,
        style_template: str = NO_TEMPLATE,
        detailer: bool = True,
        control_image: str | bytes | None = None,
        control: str = "canny",
        control_scale: float = 1.0,
        more_faces: list[str] | None = None,
        remembered_face: str | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list, str]:
        """One person: a gallery of (image, caption) and a note on what happened."""
        prompt, negative_prompt = styled(style_template, prompt, negative_prompt)
        settings = Sampling(negative_prompt, num_images, seed, randomize_seed, steps, guidance, aspect, style_template)
        run, sampling = self._start(request, progress, settings, fast, style)
        (remembered,) = self._faces([face], [remembered_face], ["your"])
        pipe = self._request_pipeline(fast)
        encoding, checked, _ = encode_checked(pipe, [remembered.encoding(), *self.more_photos(more_faces)])
        maker = self._steered(run, pipe, control_image, control, control_scale)
        with self.adapters.used_by(pipe, fast, style):
            result = maker(
                prompt,
                face=encoding,
                identity_word=chosen_word(identity_word, custom_word),
                expression=chosen_expression(expression),
                identity_start=identity_start,
                **sampling,
            )
            detailed = self._detail(detailer, run, pipe, result, [encoding], sampling)
        notes = (
            [note for note in (remembered.notice, result.prompts[0].notice) if note] + checked.sentences() + detailed
        )
        return self._finish(run, result, notes)

    @user_errors
    @as_the_ui_sends
    def generate_pair(
        self,
        face_a: Upload | str | bytes | None,
        face_b: Upload | str | bytes | None,
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
        steps: int = PAPER_STEPS,
        guidance: float = PAPER_GUIDANCE,
        aspect: str = "Landscape 4:3",
        fast: bool = False,
        style: str = NO_STYLE,
        style_template: str = NO_TEMPLATE,
        detailer: bool = True,
        control_image: str | bytes | None = None,
        control: str = "canny",
        control_scale: float = 1.0,
        remembered_face_a: str | None = None,
        remembered_face_b: str | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list, str]:
        """Two people, person A on the left of `split`, person B on the right."""
        prompt, negative_prompt = styled(style_template, prompt, negative_prompt)
        settings = Sampling(negative_prompt, num_images, seed, randomize_seed, steps, guidance, aspect, style_template)
        run, sampling = self._start(request, progress, settings, fast, style)
        remembered = self._faces([face_a, face_b], [remembered_face_a, remembered_face_b], ["person A's", "person B's"])
        pipe = self._request_pipeline(fast, PortraitBoothPeoplePipeline)
        faces = [face.encoding() for face in remembered]
        people = [
            Person(faces[0], identity_word_a or None, chosen_expression(expression_a)),
            Person(faces[1], identity_word_b or None, chosen_expression(expression_b)),
        ]
        maker = self._steered(run, pipe, control_image, control, control_scale)
        with self.adapters.used_by(pipe, fast, style):
            result = maker(prompt, people, split=split, **sampling)
            detailed = self._detail(detailer, run, pipe, result, faces, sampling)
        order = sorted(p.identity_span for p in result.prompts)
        places = (
            [describe_region(mask) for mask in result.regions]
            if result.regions
            else ["placed by the prompt (one pass)"] * 2
        )
        notes = [
            f"{name}: the {('first', 'second')[order.index(p.identity_span)]} '{p.identity_word}', {place}."
            for name, p, place in zip("AB", result.prompts, places)
        ]
        return self._finish(run, result, notes + detailed)

    def stop(self, request: gr.Request) -> None:
        self.stopping.add(request.session_hash)

    # ------------------------------------------------------------------ live hints
    @as_the_ui_sends
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

    @user_errors
    @as_the_ui_sends
    def regions(self, split: float, aspect: str, identity_word_a: str, identity_word_b: str) -> Image.Image:
        if not 0.2 <= split <= 0.8:
            raise gr.Error("Where A ends and B begins must be between 0.2 and 0.8.")
        width, height = canvas_size(aspect, self.native_size)
        return regions_preview(width, height, split, 0.1, (identity_word_a or "A", identity_word_b or "B"))
