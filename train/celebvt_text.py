"""CelebV-Text annotations → the subject word, the expression word and a caption.

CelebV-Text ships, per clip, one text file per category under `texts/<category>/<clip_id>.txt`
(appearance details, action, emotion, light). The emotion text describes the clip over time, e.g.
"neutral, happy" or "The woman is happy at first and then surprised."; its 8 classes are mapped to
the engine's emotion words (portrait/prompts.py), and the emotion at the target frame's end of the
clip is the one used.

Captions come from a pluggable `Captioner` (`--captioner module:Class`). The default,
`AnnotationCaptioner`, writes "a photo of a <word> who <first appearance sentence>" from the dataset's
own text, so no model is needed (Recognize Anything, the paper's tagger, does not import under current
transformers); a captioning model plugs in through the same interface. Whatever the captioner writes,
the subject word is found in it or put in front of it by portrait/prompts.py.
"""

from __future__ import annotations

import codecs
import importlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from portrait.errors import OptionError
from portrait.prompts import EMOTION_WORDS

EMOTION_CATEGORY = "emotion"
APPEARANCE_CATEGORIES = ("face40_details_new", "face40_details", "appearance")
ACTION_CATEGORIES = ("action_dur", "action")

# Words of CelebV-Text's emotion texts (8 classes, with their adjective and verb forms) → ours.
EMOTION_SYNONYMS = {
    "neutral": "neutral", "calm": "neutral", "expressionless": "neutral",
    "happy": "happy", "happiness": "happy", "joy": "happy", "joyful": "happy",
    "sad": "sad", "sadness": "sad", "unhappy": "sad",
    "angry": "angry", "anger": "angry", "annoyed": "angry",
    "surprised": "surprised", "surprise": "surprised", "astonished": "surprised",
    "fear": "fearful", "fearful": "fearful", "afraid": "fearful", "scared": "fearful",
    "disgust": "disgusted", "disgusted": "disgusted",
    "contempt": "contemptuous", "contemptuous": "contemptuous", "scornful": "contemptuous",
    "smile": "smiling", "smiles": "smiling", "smiling": "smiling",
    "laugh": "laughing", "laughs": "laughing", "laughing": "laughing",
    "serious": "serious",
}  # fmt: skip
MALE_WORDS = {
    "man",
    "men",
    "male",
    "he",
    "him",
    "his",
    "himself",
    "gentleman",
    "boy",
    "guy",
    "beard",
    "mustache",
    "moustache",
}
FEMALE_WORDS = {"woman", "women", "female", "she", "her", "hers", "herself", "lady", "girl"}
_WORD = re.compile(r"[a-z]+")
assert set(EMOTION_SYNONYMS.values()) <= set(EMOTION_WORDS)


@dataclass(frozen=True)
class SubjectWord:
    word: str | None  # "man" / "woman", or None when the texts do not say
    source: str  # which text decided, for the manifest's provenance


class Texts(dict):
    """{category: text} of one clip, and `fallbacks`: {category: encoding} of the files that were not UTF-8
    (recorded in the manifest, so that a caption read as Latin-1 can be traced)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fallbacks: dict[str, str] = {}


# Longest first: UTF-32-LE's mark begins with UTF-16-LE's.
_BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
                     (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding): a byte-order mark decides (UTF-8, UTF-16, UTF-32); else UTF-8, else Windows-1252 (the
    Latin-1 of most such files, with curly quotes), else Latin-1, which reads any bytes."""
    for mark, encoding in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            return data.decode(encoding), encoding
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1"), "latin-1"


def read_texts(root: Path, clip_id: str) -> Texts:
    """Every category's text for one clip: {category: text}, with the encodings that were not UTF-8."""
    texts = Texts()
    for folder in sorted((root / "texts").glob("*")):
        path = folder / f"{clip_id}.txt"
        if path.is_file():
            text, encoding = decode_text(path.read_bytes())
            texts[folder.name] = text.strip()
            if encoding not in ("utf-8", "utf-8-sig"):
                texts.fallbacks[folder.name] = encoding
    return texts


def emotion_sequence(text: str) -> list[str]:
    """Our emotion words in the order the text mentions them (repeats of the same word merged)."""
    sequence: list[str] = []
    for token in _WORD.findall(text.lower()):
        word = EMOTION_SYNONYMS.get(token)
        if word and (not sequence or sequence[-1] != word):
            sequence.append(word)
    return sequence


def expression_at(texts: dict[str, str], at_end: bool) -> str | None:
    """The emotion at the start or the end of the clip (where the target frame was taken)."""
    sequence = emotion_sequence(texts.get(EMOTION_CATEGORY, ""))
    if not sequence:
        return None
    return sequence[-1] if at_end else sequence[0]


def subject_word(texts: dict[str, str]) -> SubjectWord:
    """man / woman by majority of gendered words, appearance text first, then every other text."""
    ordered = [c for c in APPEARANCE_CATEGORIES if c in texts] + [c for c in texts if c not in APPEARANCE_CATEGORIES]
    for category in ordered:
        tokens = Counter(_WORD.findall(texts[category].lower()))
        male = sum(tokens[w] for w in MALE_WORDS)
        female = sum(tokens[w] for w in FEMALE_WORDS)
        if male != female:
            return SubjectWord("man" if male > female else "woman", f"annotation:{category}")
    return SubjectWord(None, "undecided")


class Captioner(Protocol):
    name: str

    def caption(self, image: Image.Image, texts: dict[str, str], word: str) -> str:
        """A caption of the target frame that names the subject with `word`."""


def load_captioner(spec: str = "annotation") -> Captioner:
    """`annotation`, `blip` (BLIP through transformers, train/blip_captioner.py), or
    `package.module:ClassName` of any class with the `Captioner` interface (built with no arguments)."""
    if spec == "annotation":
        return AnnotationCaptioner()
    if spec == "blip":
        from .blip_captioner import BlipCaptioner

        return BlipCaptioner()
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        raise OptionError(f"--captioner takes 'annotation' or 'module:Class', got {spec!r}")
    return getattr(importlib.import_module(module_name), class_name)()


class AnnotationCaptioner:
    """ "a photo of a <word>" plus the dataset's first appearance sentence, the subject made neutral."""

    name = "annotation"

    def caption(self, image: Image.Image, texts: dict[str, str], word: str) -> str:
        detail = next((texts[c] for c in APPEARANCE_CATEGORIES if texts.get(c)), "")
        sentence = re.split(r"(?<=[.!?])\s", detail.strip(), maxsplit=1)[0].rstrip(".!? ")
        base = f"a photo of a {word}"
        rest = _SUBJECT.sub("", sentence, count=1)
        if rest == sentence or not rest:  # the sentence does not start with its subject: keep it whole
            return f"{base}, {sentence[0].lower()}{sentence[1:]}" if sentence else base
        joiner = " " if rest.split()[0].lower() in _DIRECT_JOINS else " who "
        return f"{base}{joiner}{rest}"


_DIRECT_JOINS = {"with", "in", "on", "at", "wearing", "holding", "without"}  # "a woman with ...", not "who with"
# "The woman", "This young man", "A lady with short hair" ..., or a leading "He"/"She": the sentence's subject.
_SUBJECT = re.compile(
    r"^(?:(?:the|this|that|a|an)\s+(?:[a-z-]+\s+){0,3}?(?:man|woman|person|male|female|lady|gentleman|guy|girl|boy)"
    r"|he|she)\s+",
    flags=re.I,
)
