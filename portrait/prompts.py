"""Identity words, emotion words, and how a prompt gets its identity token and expression.

Training captions, the pipeline and the app all go through this module, so the word that receives
the face feature is found the same way everywhere.

Choices (docs/method.md, "Components"; the paper leaves them open):
- A prompt that lacks the identity word gets the prefix "a photo of a <word>, " (and the result
  says so), rather than an error: a user who picked "woman" and typed "in the snow" meant it.
- An expression is written as an adjective right before the identity word ("a happy woman"), the
  position where CelebV-Text captions carry it and where ECAC looks for it. An emotion word the
  prompt already holds is not written twice.
- A word that CLIP's tokenizer splits into several pieces is represented by its last piece: CLIP's
  text encoder is causal, so the last piece is the one that has seen the whole word.
- FastComposer's way of marking a person works too: the word `img` right after a word ("a man img
  playing guitar") marks that word and is removed from the text, as FastComposer removes its marker
  token; marked words take the place of the identity-word search.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import regex

from .errors import PromptError

IDENTITY_WORDS: tuple[str, ...] = ("man", "woman")
EMOTION_WORDS: tuple[str, ...] = (
    "happy",
    "sad",
    "angry",
    "surprised",
    "fearful",
    "disgusted",
    "contemptuous",
    "neutral",
    "smiling",
    "laughing",
    "serious",
)
IMAGE_MARKER = "img"  # FastComposer's marker, written right after the word that names a person
MAX_PROMPT_CHARS = 2000  # far beyond CLIP's 77 tokens; longer input is refused, not silently cut

# A letter, then letters and the marks that belong to them ("i̇" of "İnci" lower-cased, Devanagari's vowel
# signs): words the way a reader sees them. CLIP's pre-tokenizer may split a word at a mark; its last
# piece is still the one that has seen the whole word (see token_index).
_WORD = regex.compile(r"\p{L}[\p{L}\p{M}]*")


@dataclass(frozen=True)
class IdentityPrompt:
    """A prompt ready for STEA: its final text and where its identity (and emotion) word stands."""

    text: str
    identity_word: str
    identity_span: tuple[int, int]
    expression: str | None = None
    expression_span: tuple[int, int] | None = None
    notice: str | None = None


def word_spans(text: str, word: str) -> list[tuple[int, int]]:
    """Character spans of every whole-word, case-insensitive occurrence of `word`."""
    word = word.lower()
    return [m.span() for m in _WORD.finditer(text) if m.group().lower() == word]


def normalized(text: str) -> str:
    """NFC: "café" typed on macOS (e + combining accent) and elsewhere (é) is the same word."""
    return unicodedata.normalize("NFC", text)


def check_single_word(word: str, what: str = "identity word") -> str:
    cleaned = normalized(normalized(word).strip().lower())
    if not _WORD.fullmatch(cleaned):
        raise PromptError(f"The {what} must be a single word of letters, got {word!r}")
    return cleaned


def clean_prompt(prompt: str) -> str:
    """Collapse whitespace and refuse prompts far beyond what the text encoder reads."""
    text = " ".join(normalized(prompt).split())
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptError(
            f"The prompt is {len(text)} characters long; keep it under {MAX_PROMPT_CHARS} "
            "(the text encoder reads only about 75 words anyway)"
        )
    return text


def strip_markers(text: str) -> tuple[str, list[tuple[int, int]]]:
    """`text` without FastComposer's `img` markers, and the span (in the result) of each word they marked."""
    words = list(_WORD.finditer(text))
    kept, marked, cut = [], [], 0  # cut: characters removed so far, to map spans into the result
    position = 0
    for index, match in enumerate(words):
        if match.group().lower() != IMAGE_MARKER:
            continue
        previous = words[index - 1] if index else None
        if previous is None or text[previous.end() : match.start()] != " " or previous.group().lower() == IMAGE_MARKER:
            raise PromptError(
                f"{IMAGE_MARKER!r} marks the word right before it (e.g. 'a man {IMAGE_MARKER} playing guitar'); "
                f"write it after the word that names the person"
            )
        kept.append(text[position : previous.end()])
        marked.append((previous.start() - cut, previous.end() - cut))
        cut += match.end() - previous.end()
        position = match.end()
    kept.append(text[position:])
    return "".join(kept), marked


def build_identity_prompt(
    prompt: str,
    identity_word: str | None = None,
    occurrence: int | None = None,
    expression: str | None = None,
    identity_words: Sequence[str] = IDENTITY_WORDS,
    emotion_words: Sequence[str] = EMOTION_WORDS,
) -> IdentityPrompt:
    """Find (or add) the identity word of a one-person `prompt` and write the expression into it.

    `identity_word=None` takes the first of `identity_words` that the prompt contains.
    `occurrence` (0-based) picks which occurrence of the word receives the face; default the first.
    """
    text, marked = strip_markers(clean_prompt(prompt))
    notice = None
    if marked:
        span = _one_marked_word(text, marked, identity_word)
        (placed,) = _write_expressions(text, [(text[slice(*span)].lower(), span, expression)], emotion_words)
        return placed
    if identity_word is None:
        identity_word = _first_identity_word(text, identity_words)
    identity_word = check_single_word(identity_word)
    spans = word_spans(text, identity_word)
    if not spans:
        if occurrence:
            raise PromptError(f"The prompt does not contain {identity_word!r}")
        prefix = f"a photo of a {identity_word}"
        text = f"{prefix}, {text}" if text else prefix
        notice = f"The prompt did not name the subject; it became {text!r}"
        spans = word_spans(text, identity_word)
    index = occurrence or 0
    if not 0 <= index < len(spans):
        raise PromptError(f"Asked for occurrence {index + 1} of {identity_word!r}, but the prompt has {len(spans)}")
    (placed,) = _write_expressions(text, [(identity_word, spans[index], expression)], emotion_words)
    return dataclasses.replace(placed, notice=notice)


def build_subject_prompts(
    prompt: str,
    subject_words: Sequence[str | None],
    expressions: Sequence[str | None],
    identity_words: Sequence[str] = IDENTITY_WORDS,
    emotion_words: Sequence[str] = EMOTION_WORDS,
) -> list[IdentityPrompt]:
    """Place several people in one prompt, one `IdentityPrompt` per person, all with the same text.

    People are matched to identity-word occurrences in order of appearance: a person with a word
    takes the first free occurrence of it, a person without one takes the first free occurrence of
    any identity word ("a man and a man": the first face is the first man).
    """
    text, marked = strip_markers(clean_prompt(prompt))
    words = [None if word is None else check_single_word(word) for word in subject_words]
    vocabulary = {word for word in words if word} | (set(identity_words) if None in words else set())
    if marked:  # FastComposer's markers name the people; nothing else is searched for
        vocabulary = {text[slice(*span)].lower() for span in marked}
        occurrences = [(span, text[slice(*span)].lower()) for span in marked]
    else:
        occurrences = sorted((span, word) for word in vocabulary for span in word_spans(text, word))
    if len(occurrences) != len(words):
        named = ", ".join(word for _, word in occurrences) or "nobody"
        raise PromptError(
            f"{len(words)} faces were given but the prompt names {len(occurrences)} "
            f"{'person' if len(occurrences) == 1 else 'people'} ({named}); write one identity word "
            f"({' / '.join(sorted(vocabulary))}) per face"
        )
    free = list(occurrences)
    matches: dict[int, tuple[tuple[int, int], str]] = {}
    # People who name their word take its first free occurrence; the others share what is left, in order.
    for person in sorted(range(len(words)), key=lambda i: words[i] is None):
        match = next(((span, found) for span, found in free if words[person] in (None, found)), None)
        if match is None:
            raise PromptError(f"No free {words[person]!r} in the prompt for the face that should be {words[person]!r}")
        free.remove(match)
        matches[person] = match
    placements = [(matches[i][1], matches[i][0], expression) for i, expression in enumerate(expressions)]
    return _write_expressions(text, placements, emotion_words)


def _write_expressions(
    text: str, placements: Sequence[tuple[str, tuple[int, int], str | None]], emotion_words: Sequence[str]
) -> list[IdentityPrompt]:
    """Insert each person's expression before their identity word, unless the prompt already has it."""
    inserts: list[tuple[int, str]] = []  # (position in `text`, word inserted there)
    for _, span, expression in placements:
        if expression:
            expression = check_single_word(expression, "expression")
            if expression not in emotion_words:
                raise PromptError(f"Unknown expression {expression!r}; choose one of: {', '.join(emotion_words)}")
            if not word_spans(text, expression):
                inserts.append((span[0], expression))

    def moved(position: int) -> int:
        return position + sum(len(word) + 1 for at, word in inserts if at <= position)

    final = text
    for at, word in sorted(inserts, reverse=True):
        final = f"{final[:at]}{word} {final[at:]}"
    prompts = []
    for identity_word, span, expression in placements:
        expression_span = None
        if expression:
            expression = expression.strip().lower()
            inserted = [at for at, word in inserts if at == span[0]]
            start = moved(span[0]) - len(expression) - 1 if inserted else moved(word_spans(text, expression)[0][0])
            expression_span = (start, start + len(expression))
        prompts.append(
            IdentityPrompt(final, identity_word, (moved(span[0]), moved(span[1])), expression, expression_span)
        )
    return prompts


def _one_marked_word(text: str, marked: list[tuple[int, int]], identity_word: str | None) -> tuple[int, int]:
    """The span of the one word a one-person prompt marks with `img`, checked against a chosen identity word."""
    if len(marked) != 1:
        raise PromptError(f"The prompt marks {len(marked)} people with {IMAGE_MARKER!r}, but one face was given")
    word = text[slice(*marked[0])].lower()
    if identity_word is not None and check_single_word(identity_word) != word:
        raise PromptError(
            f"The prompt marks {word!r} with {IMAGE_MARKER!r} but the identity word chosen is {identity_word!r}"
        )
    return marked[0]


def _first_identity_word(text: str, identity_words: Sequence[str]) -> str:
    found = [(spans[0][0], word) for word in identity_words if (spans := word_spans(text, word))]
    if not found:
        raise PromptError(
            f"The prompt names no subject; write one of {', '.join(map(repr, identity_words))} "
            "in it (e.g. 'a photo of a woman in the snow') or choose the identity word"
        )
    return min(found)[1]


def token_index(tokenizer, text: str, span: tuple[int, int]) -> int:
    """Index, in the padded token sequence of `text`, of the last token of the word at `span`.

    CLIP's pre-tokenizer never merges across a word boundary, so the tokens of the text up to the
    word's end are a prefix of the tokens of the whole text.
    """
    ids = tokenizer(text[: span[1]], add_special_tokens=True, truncation=False).input_ids
    index = len(ids) - 2  # drop the end-of-text token; the start token keeps position 0
    last_usable = tokenizer.model_max_length - 2
    if index > last_usable:
        raise PromptError(
            f"{text[span[0] : span[1]]!r} falls past the text encoder's {tokenizer.model_max_length}-token "
            "limit; move it earlier in the prompt or shorten the prompt"
        )
    return index
