"""The paper's protocols as a plan of images: which subjects, prompts and expressions, how many of each.

The plan is a pure function of a run's settings (RUN/run.json), so generation and scoring both resume.
Prompt groups come from a JSON file (default evaluation/prompts.json, written for this project) mapping group
names to prompts with a `{subject}` placeholder ("multi" prompts use `{subject_a}` and `{subject_b}`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from portrait.prompts import EMOTION_WORDS, build_identity_prompt, build_subject_prompts

DEFAULT_PROMPTS = Path(__file__).with_name("prompts.json")
SINGLE_GROUPS = ("accessory", "style", "action", "context")
PROTOCOLS = ("single", "expression", "multi")


@dataclass(frozen=True)
class Job:
    """One image of the plan."""

    protocol: str
    group: str
    subjects: tuple[str, ...]
    template: str
    prompt_index: int
    image_index: int
    expression: str | None = None

    @property
    def file(self) -> str:
        who = "+".join(Path(name).stem for name in self.subjects)
        return f"images/{self.protocol}/{who}/{self.group}-{self.prompt_index:02d}-{self.image_index}.png"


def plan(run: dict) -> list[Job]:
    subjects, prompts, count = list(run["subjects"]), run["prompts"], run["images_per_prompt"]
    jobs = []
    if "single" in run["protocols"]:
        for name, group in itertools.product(subjects, SINGLE_GROUPS):
            for p, template in enumerate(prompts.get(group, [])):
                jobs += [Job("single", group, (name,), template, p, i) for i in range(count)]
    if "expression" in run["protocols"]:
        for name in subjects:
            for p, emotion in enumerate(EMOTION_WORDS):
                jobs += [
                    Job("expression", "expression", (name,), "a photo of {subject}", p, i, emotion)
                    for i in range(count)
                ]
    if "multi" in run["protocols"]:
        for pair in itertools.combinations(subjects, 2):
            for p, template in enumerate(prompts.get("multi", [])):
                jobs += [Job("multi", "multi", pair, template, p, i) for i in range(count)]
    return jobs


def prompt_text(job: Job, words: dict[str, str]) -> tuple[str, list]:
    """The final prompt text and its placed identity prompts (for our pipeline's arguments)."""
    if job.protocol == "multi":
        a, b = (words[name] for name in job.subjects)
        text = job.template.format(subject_a=f"a {a}", subject_b=f"a {b}")
        return (placed := build_subject_prompts(text, [a, b], [None, None]))[0].text, placed
    word = words[job.subjects[0]]
    placed = build_identity_prompt(job.template.format(subject=f"a {word}"), word, expression=job.expression)
    return placed.text, [placed]
