"""The training set on disk: what data preparation writes and the training reader reads.

    DIR/manifest.jsonl          one JSON object per sample (fields of `Sample`)
    DIR/<shard>/<id>.png        target frame, RGB
    DIR/<shard>/<id>.mask.png   face mask, L (255 = face), same size as the target
    DIR/<shard>/<id>.ref.png    reference face, aligned 112×112 RGB (another frame of the same video)

Every file is written under a temporary name and renamed, and a sample's manifest line is appended
only after its files exist, so a killed writer never leaves a row pointing at half-written files.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from portrait.errors import DataError
from portrait.files import write_png
from portrait.prompts import IdentityPrompt

MANIFEST = "manifest.jsonl"


@dataclass
class Sample:
    id: str
    image: str
    mask: str
    reference: str
    caption: str
    identity_word: str
    identity_span: tuple[int, int]
    landmarks: list[list[float]]  # 5 × (x, y) in target pixels: eyes, nose, mouth corners
    expression: str | None = None
    expression_span: tuple[int, int] | None = None
    person_mask: str | None = None  # L image, every non-background parsing label (mask ablation)
    meta: dict = dataclasses.field(default_factory=dict)  # provenance: frames, word sources, scores

    @classmethod
    def of_prompt(
        cls,
        id: str,
        stem: str,
        prompt: IdentityPrompt,
        landmarks: list,
        *,
        person_mask: bool = False,
        meta: dict | None = None,
    ) -> Sample:
        """A sample captioned by `prompt` whose files are `<stem>.png`, `.mask.png`, `.ref.png` (and `.person.png`)."""
        return cls(
            id=id,
            image=f"{stem}.png",
            mask=f"{stem}.mask.png",
            reference=f"{stem}.ref.png",
            caption=prompt.text,
            identity_word=prompt.identity_word,
            identity_span=prompt.identity_span,
            landmarks=landmarks,
            expression=prompt.expression,
            expression_span=prompt.expression_span,
            person_mask=f"{stem}.person.png" if person_mask else None,
            meta=meta or {},
        )


def write_sample_files(
    root: Path,
    sample: Sample,
    image: Image.Image,
    mask: Image.Image,
    reference: Image.Image,
    person_mask: Image.Image | None = None,
) -> None:
    pictures = (
        (sample.image, image),
        (sample.mask, mask),
        (sample.reference, reference),
        (sample.person_mask, person_mask),
    )
    for relative, picture in pictures:
        if relative and picture is not None:
            write_png(Path(root) / relative, picture)


def append_jsonl(path: Path, row: dict) -> None:
    """One line in one write, flushed to disk: a kill can cut only the line being written."""
    line = json.dumps(row, ensure_ascii=False) + "\n"
    with open(path, "a+b") as handle:
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = "\n" + line  # a line cut short by a kill stays on its own line, this one intact
        handle.write(line.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(paths) -> list[dict]:
    """Every complete row of the given files; a last line cut short by a kill is ignored."""
    rows = []
    for path in sorted(paths):
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def write_sample(root: Path, sample: Sample, image, mask, reference, person_mask=None) -> None:
    """Write the sample's files, then append its manifest line."""
    write_sample_files(root, sample, image, mask, reference, person_mask)
    append_jsonl(Path(root) / MANIFEST, dataclasses.asdict(sample))


def manifest_files(root: Path) -> list[Path]:
    """manifest.jsonl and the per-shard manifest-i-of-n.jsonl files."""
    return sorted(Path(root).glob("manifest*.jsonl"))


def read_manifest(root: Path) -> list[Sample]:
    """Every complete row of every manifest file in `root`."""
    files = manifest_files(root)
    if not files:
        raise DataError(f"No {MANIFEST} in {root}: prepare the data first (python -m train.prepare_celebvt)")
    samples = []
    for row in read_jsonl(files):
        row["identity_span"] = tuple(row["identity_span"])
        row["expression_span"] = tuple(row["expression_span"]) if row.get("expression_span") else None
        samples.append(Sample(**row))
    return samples
