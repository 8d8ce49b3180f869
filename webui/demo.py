"""The app in offline-demo mode: drawn people through the drawn-people experiment's trained model.

The model (portrait/demo.py) knows the cartoon people of experiments/drawn_people/world.py only,
so a face here is one of the example people (held out by the experiment: no training step saw them)
or a new person the world's generator draws with a fresh seed, never one of the training people.
A real photo gets one sentence instead of a picture that would mean nothing.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import gradio as gr
import numpy as np

from experiments.drawn_people.world import EXPRESSIONS, DrawnIdentity, all_people, draw_frame
from portrait.defaults import PAPER_GUIDANCE, PAPER_STEPS
from portrait.demo import DEMO_FOLDER, PHOTO_NOTE, DrawnPerson, enlarged, example_people
from portrait.multi import Person, PortraitBoothPeoplePipeline
from portrait.pipeline import PortraitBoothPipeline

from .adapters import NO_STYLE
from .errors import user_errors
from .handlers import NO_EXPRESSION, Limits, PortraitService, Sampling, chosen_expression
from .inputs import Number, Slider
from .uploads import FaceUpload
from .wiring import inputs_for

NEW_PERSON = "a new person"
PROMPT = "a photo of a {word}"  # a caption of the kind the model was trained on (world.TEMPLATES)
PAIR_PROMPT = "a photo of a {a} and a {b}"
DEMO_BANNER = (
    "**Offline demo: a toy model of drawn people, trained on a CPU.** No Stable Diffusion base is on this "
    "machine, so the app serves the model that the drawn-people experiment trained (STEA, DIP and ECAC at "
    "{size}×{size} pixels; `assets/demo`). It carries a drawn face it never saw in training into new pictures, "
    "with the expression you pick. Real selfies need Stable Diffusion 1.5 with PortraitBooth weights or FastComposer's "
    "published ones (`--identity-model fastcomposer`; README, 'Weights')."
)


@dataclass
class NewPeople:
    """People drawn by the world's generator from a seed, never one of the training people (the demo
    model saw none but those, as people.json records them)."""

    size: int  # the model's picture side
    training: frozenset[DrawnIdentity]
    expression: str  # what their reference picture shows, as the example people's
    unseen: list[DrawnIdentity] = field(init=False)

    def __post_init__(self):
        self.unseen = [person for person in all_people() if person not in self.training]

    @classmethod
    def of_demo(cls) -> "NewPeople":
        record = json.loads((DEMO_FOLDER / "people.json").read_text())
        training = frozenset(DrawnIdentity(*traits) for traits in record["training_people"])
        return cls(record["config"]["size"], training, record["reference_expression"])

    def draw(self, seed: int) -> DrawnPerson:
        rng = np.random.default_rng((4, seed))
        person = self.unseen[int(rng.integers(len(self.unseen)))]
        frame = draw_frame(person, self.expression, rng, self.size)
        return DrawnPerson(f"a new person (seed {seed})", person.word, frame.image, frame.landmarks, self.expression)


class DemoService(PortraitService):
    """The demo's handlers, on the shared request machinery of `PortraitService` (checks, seeds, captions)."""

    def __init__(self, pipe: PortraitBoothPipeline, limits: Limits = Limits()):
        super().__init__(pipe, limits)
        self.examples = {person.name: person for person in example_people()}
        self.new_people = NewPeople.of_demo()

    @property
    def choices(self) -> list[str]:
        return [*self.examples, NEW_PERSON]

    def drawn_person(self, choice: str, new_person_seed: int | float | None) -> DrawnPerson:
        """An example person, or the new person of `new_person_seed`: a person outside the training split."""
        if choice in self.examples:
            return self.examples[choice]
        if choice != NEW_PERSON:
            raise gr.Error(f"Person must be one of: {', '.join(self.choices)}.")
        if new_person_seed is None or not 0 <= new_person_seed < 2**63 or new_person_seed != int(new_person_seed):
            raise gr.Error("The new person's seed must be a whole number from 0 up.")
        return self.new_people.draw(int(new_person_seed))

    # ------------------------------------------------------------------ handlers
    @user_errors
    def show_person(self, person: str, new_person_seed: int = 0):
        """The chosen person's reference picture, shown large, and who they are."""
        drawn = self.drawn_person(person, new_person_seed)
        where = "drawn just now, never seen in training" if person == NEW_PERSON else "held out: never seen in training"
        about = f"**{drawn.name}**: a {drawn.identity_word} ({where}); the reference shows {drawn.expression}."
        return enlarged(drawn.image), about

    def new_person_seed(self) -> int:
        return random.randrange(2**31)

    @user_errors
    def photo_note(self, face: str | bytes | None) -> str:
        """A real photo in demo mode: read (and deleted), answered with one sentence."""
        (image,) = self.uploads.read([face])
        return "" if image is None else PHOTO_NOTE

    @user_errors
    def generate_drawn(
        self,
        person: str,
        expression: str = "happy",
        num_images: int = 1,
        seed: int = 0,
        randomize_seed: bool = True,
        steps: int = PAPER_STEPS,
        guidance: float = PAPER_GUIDANCE,
        new_person_seed: int = 0,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list, str]:
        """One drawn person in new pictures: a gallery of (picture shown large, caption) and a note."""
        drawn = self.drawn_person(person, new_person_seed)
        settings = Sampling("", num_images, seed, randomize_seed, steps, guidance)
        run, sampling = self._start(request, progress, settings, fast=False, style=NO_STYLE)
        pipe = self._request_pipeline(False)
        result = pipe(PROMPT.format(word=drawn.identity_word), face=pipe.encode_faces(drawn.analysis()),
                      expression=chosen_expression(expression), **sampling)  # fmt: skip
        return self._shown_large(*self._finish(run, result, [f"{drawn.name}."]))

    @user_errors
    def generate_drawn_pair(
        self,
        person_a: str,
        person_b: str,
        expression_a: str = "happy",
        expression_b: str = "sad",
        num_images: int = 1,
        seed: int = 0,
        randomize_seed: bool = True,
        steps: int = PAPER_STEPS,
        guidance: float = PAPER_GUIDANCE,
        new_person_seed_a: int = 0,
        new_person_seed_b: int = 1,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list, str]:
        """Two drawn people side by side in one picture twice as wide (A left, B right; regions, the paper's way)."""
        drawn = [self.drawn_person(person_a, new_person_seed_a), self.drawn_person(person_b, new_person_seed_b)]
        settings = Sampling("", num_images, seed, randomize_seed, steps, guidance)
        run, sampling = self._start(request, progress, settings, fast=False, style=NO_STYLE)
        run.size = (2 * self.native_size, self.native_size)
        sampling.update(width=run.size[0], height=run.size[1])
        pipe = self._request_pipeline(False, PortraitBoothPeoplePipeline)
        people = [Person(pipe.encode_faces(d.analysis()), d.identity_word, chosen_expression(e))
                  for d, e in zip(drawn, (expression_a, expression_b))]  # fmt: skip
        prompt = PAIR_PROMPT.format(a=drawn[0].identity_word, b=drawn[1].identity_word)
        result = pipe(prompt, people, **sampling)
        note = f"A (left): {drawn[0].name}; B (right): {drawn[1].name}."
        return self._shown_large(*self._finish(run, result, [note]))

    @staticmethod
    def _shown_large(gallery: list, note: str) -> tuple[list, str]:
        return [(enlarged(image), caption) for image, caption in gallery], note


def demo_banner(service: DemoService) -> str:
    return DEMO_BANNER.format(size=service.native_size)


def build_demo_app(service: DemoService, banner: str) -> gr.Blocks:
    """Pick a person (or draw a new one) and an expression; one person, or two side by side."""
    expressions = [NO_EXPRESSION, *EXPRESSIONS]
    first, second = service.choices[0], service.choices[1]
    with gr.Blocks(title="PortraitBooth (offline demo)", delete_cache=(300, 600)) as demo:
        gr.Markdown("# PortraitBooth\nPortraits that look like you, from one selfie and a prompt. No fine-tuning.")
        gr.Markdown(banner, elem_classes="banner", elem_id="banner")
        with gr.Tab("Single portrait"):
            with gr.Row():
                with gr.Column():
                    person, seed_of_new, reference, about, draw_new = person_picker(service, "Person", first, 0)
                    with gr.Accordion("Your own photo", open=False):
                        upload = FaceUpload(
                            label="A real photo", type="filepath", image_mode=None, sources=["upload"], height=200
                        )
                        note = gr.Markdown(elem_id="photo_note")
                with gr.Column():
                    expression = gr.Dropdown(expressions, value="happy", label="Expression")
                    controls = sampling_controls(service)
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(
                        label="New pictures of this person", format="png", columns=2, height=560, elem_id="gallery"
                    )
                    info = gr.Markdown(elem_id="info")
        with gr.Tab("Two people"):
            with gr.Row():
                with gr.Column():
                    person_a, seed_a, reference_a, about_a, draw_a = person_picker(service, "Person A (left)", first, 0)
                    expression_a = gr.Dropdown(expressions, value="happy", label="A's expression")
                with gr.Column():
                    person_b, seed_b, reference_b, about_b, draw_b = person_picker(
                        service, "Person B (right)", second, 1
                    )
                    expression_b = gr.Dropdown(expressions, value="sad", label="B's expression")
                with gr.Column(scale=2):
                    pair_controls = sampling_controls(service)
                    run_pair = gr.Button("Generate", variant="primary", elem_id="generate_pair")
                    pair_gallery = gr.Gallery(
                        label="Pictures", format="png", columns=1, height=400, elem_id="pair_gallery"
                    )
                    pair_info = gr.Markdown(elem_id="pair_info")

        for chooser, seed, shown, text, button in ((person, seed_of_new, reference, about, draw_new),
                                                   (person_a, seed_a, reference_a, about_a, draw_a),
                                                   (person_b, seed_b, reference_b, about_b, draw_b)):  # fmt: skip
            gr.on(
                [chooser.change, seed.change],
                service.show_person,
                [chooser, seed],
                [shown, text],
                api_visibility="private",
            )
            button.click(
                lambda: (NEW_PERSON, service.new_person_seed()), None, [chooser, seed], api_visibility="private"
            )
            demo.load(service.show_person, [chooser, seed], [shown, text], api_visibility="private")
        upload.input(service.photo_note, upload, note, api_name="detect_face", concurrency_id="faces")
        single = dict(person=person, expression=expression, new_person_seed=seed_of_new, **controls)
        run.click(service.generate_drawn, inputs_for(service.generate_drawn, single), [gallery, info], api_name="generate_drawn",
                  concurrency_id="gpu")  # fmt: skip
        pair = dict(person_a=person_a, person_b=person_b, expression_a=expression_a, expression_b=expression_b,
                    new_person_seed_a=seed_a, new_person_seed_b=seed_b, **pair_controls)  # fmt: skip
        run_pair.click(service.generate_drawn_pair, inputs_for(service.generate_drawn_pair, pair), [pair_gallery, pair_info],
                       api_name="generate_drawn_pair", concurrency_id="gpu")  # fmt: skip
    return demo


def person_picker(service: DemoService, label: str, chosen: str, seed: int) -> tuple:
    """Who: an example person or a new one (with the seed that draws them), and their reference, shown large."""
    person = gr.Dropdown(service.choices, value=chosen, label=label)
    with gr.Row():
        seed_of_new = Number(value=seed, precision=0, minimum=0, label="New person's seed")
        draw_new = gr.Button("Draw a new person", size="sm")
    reference = gr.Image(label="Reference", interactive=False, height=256, format="png")
    about = gr.Markdown()
    return person, seed_of_new, reference, about, draw_new


def sampling_controls(service: DemoService) -> dict:
    controls = {"num_images": Slider(1, service.limits.max_images, value=2, step=1, label="Number of pictures")}
    with gr.Row():
        controls["seed"] = Number(value=0, precision=0, label="Seed")
        controls["randomize_seed"] = gr.Checkbox(value=True, label="Random seed")
    with gr.Accordion("Advanced", open=False):
        controls["steps"] = Slider(1, service.limits.max_steps, value=PAPER_STEPS, step=1, label="Steps")
        controls["guidance"] = Slider(1.0, 15.0, value=PAPER_GUIDANCE, step=0.5, label="Guidance scale")
    return controls
