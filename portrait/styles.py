"""Style templates and picture sizes: the named choices the CLI and the app share.

Styles live in one data file, assets/styles.json: each is a prompt template with `{prompt}` where
the user's prompt goes (early, so that its identity word stays among the tokens the text encoder
reads) and a negative prompt added to the user's own. Sizes are named aspect ratios; a picture has
about the model's native number of pixels in that shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import OptionError

STYLES_FILE = Path(__file__).resolve().parent.parent / "assets" / "styles.json"
NO_STYLE = "no style"
ASPECTS = {
    "Square 1:1": (1, 1),
    "Portrait 3:4": (3, 4),
    "Landscape 4:3": (4, 3),
    "Tall 2:3": (2, 3),
    "Wide 3:2": (3, 2),
}


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str  # a template holding "{prompt}" once
    negative_prompt: str

    def apply(self, prompt: str, negative_prompt: str | None = None) -> tuple[str, str]:
        """The styled prompt and the negative prompt with the style's own added after the user's."""
        negative = ", ".join(part for part in (negative_prompt, self.negative_prompt) if part)
        return self.prompt.replace("{prompt}", prompt.strip()), negative


@cache
def load_styles(path: Path = STYLES_FILE) -> dict[str, Style]:
    """Every style of the data file, by name, in the file's order."""
    entries = json.loads(path.read_text(encoding="utf-8"))["styles"]
    styles = {name: Style(name, entry["prompt"], entry["negative_prompt"]) for name, entry in entries.items()}
    for style in styles.values():
        if style.prompt.count("{prompt}") != 1:
            raise ValueError(f"Style {style.name!r} in {path} must hold {{prompt}} exactly once")
    return styles


def style_names() -> list[str]:
    """The choices a user sees: no style first, then the file's styles."""
    return [NO_STYLE, *load_styles()]


def styled(style: str | None, prompt: str, negative_prompt: str | None = None) -> tuple[str, str | None]:
    """`prompt` and `negative_prompt` in `style` (None or NO_STYLE: unchanged)."""
    if style in (None, "", NO_STYLE):
        return prompt, negative_prompt
    styles = load_styles()
    if style not in styles:
        raise OptionError(f"Unknown style {style!r}; choose one of: {', '.join(style_names())}")
    return styles[style].apply(prompt, negative_prompt)


def canvas_size(aspect: str, native: int) -> tuple[int, int]:
    """(width, height) of about native² pixels in the named aspect, in steps the models accept."""
    if aspect not in ASPECTS:
        raise OptionError(f"Unknown size {aspect!r}; choose one of: {', '.join(ASPECTS)}")
    ratio_w, ratio_h = ASPECTS[aspect]
    step = max(16, native // 8)
    scale = native / (ratio_w * ratio_h) ** 0.5
    return max(step, round(ratio_w * scale / step) * step), max(step, round(ratio_h * scale / step) * step)
