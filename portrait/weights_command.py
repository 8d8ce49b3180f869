"""`portrait weights`: a table of every weight the project can use and whether it is here;
`portrait weights fetch NAME ... | --all` downloads what can be downloaded.

"Here" is what the loaders would use without the network: a file in the weights folder, or a hub
model whose needed files are all in the Hugging Face cache. Hub models come through huggingface_hub
(its progress bars, its offline mode); files through portrait/download.py (resumed, checked). Whatever
cannot be had is one line on stderr saying what and where to put it, and the exit status is not 0.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub.constants

from .download import download, partial_path
from .errors import MissingWeightsError, OptionError
from .exits import FAILED, one_line
from .loading import WEIGHTS_DIR_ENV, cached_hub_folder, fetch_hub_model, weights_dir_or_default
from .weights import WEIGHTS, HubModel, Weight, WeightFile

COLUMNS = ("name", "for", "status", "size", "where", "licence")


@dataclass(frozen=True)
class Status:
    weight: Weight
    present: bool
    state: str  # present, missing, partial N%, or present with the wrong size
    size: str
    where: str


def add_weights_parser(commands: argparse._SubParsersAction) -> None:
    """`weights` and `weights fetch` on the `portrait` command."""
    folder_help = f"weights folder for third-party files (default ${WEIGHTS_DIR_ENV} or ./weights)"
    parser = commands.add_parser("weights", help="list every weight the project can use; `weights fetch` gets them")
    parser.add_argument("--weights-dir", type=Path, help=folder_help)
    actions = parser.add_subparsers(dest="weights_action", metavar="fetch")
    fetch_parser = actions.add_parser("fetch", help="download weights by name (see `portrait weights`), or --all")
    fetch_parser.add_argument("names", nargs="*", metavar="NAME")
    fetch_parser.add_argument("--all", action="store_true", help="every weight that can be downloaded")
    fetch_parser.add_argument("--weights-dir", type=Path, default=argparse.SUPPRESS, help=folder_help)


def run_weights(args: argparse.Namespace) -> int:
    folder = weights_dir_or_default(args.weights_dir)
    if args.weights_action == "fetch":
        return fetch(_chosen(args.names, args.all), folder)
    print(table(folder))
    return 0


def _chosen(names: list[str], everything: bool) -> list[Weight]:
    if everything:
        return list(WEIGHTS.values())
    unknown = [name for name in names if name not in WEIGHTS]
    if unknown or not names:
        what = f"unknown weight {', '.join(unknown)}" if unknown else "name the weights to fetch or give --all"
        raise OptionError(f"{what}; the names are: {', '.join(WEIGHTS)}")
    return [WEIGHTS[name] for name in dict.fromkeys(names)]


def table(folder: Path) -> str:
    """The table `portrait weights` prints, with where the two kinds of weights live."""
    rows = [COLUMNS] + [
        (s.weight.name, s.weight.purpose, s.state, s.size, s.where, s.weight.licence)
        for s in (status(weight, folder) for weight in WEIGHTS.values())
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(
        [f"Weights folder: {folder}", f"Hugging Face cache: {huggingface_hub.constants.HF_HUB_CACHE}", "", *lines, "",
         "`portrait weights fetch NAME ...` or `portrait weights fetch --all` downloads what is missing."]
    )  # fmt: skip


def status(weight: Weight, folder: Path) -> Status:
    """Whether `weight` is here, as its loader would find it without the network."""
    source = weight.source
    if isinstance(source, WeightFile):
        path = folder / source.filename
        if path.is_file():
            got = path.stat().st_size
            wrong = source.size is not None and got != source.size
            return Status(weight, not wrong, f"wrong size, {source.size} B expected" if wrong else "present",
                          human_size(got), str(path))  # fmt: skip
        part = partial_path(path)
        state = f"partial {part.stat().st_size / source.size:.0%}" if part.is_file() and source.size else "missing"
        return Status(weight, False, state, human_size(source.size), str(path))
    for model in (source, *weight.alternatives):
        cached = cached_hub_folder(model)
        if cached is not None:
            size = sum((cached / name).stat().st_size for name in model.required)
            return Status(weight, True, "present", human_size(size), f"Hugging Face cache: {model.repo_id}")
    expected = human_size(source.size, approximate=True)
    return Status(weight, False, "missing", expected, f"Hugging Face cache: {source.repo_id}")


def fetch(weights: list[Weight], folder: Path) -> int:
    """Get each weight that is not here; one line per weight (stdout when had, stderr when not); 0 when all are here."""
    failures = 0
    for weight in weights:
        here = status(weight, folder)
        if here.present:
            print(f"{weight.name}: already here ({here.where})")
            continue
        try:
            where = _fetch_one(weight, folder)
        except MissingWeightsError as error:
            failures += 1
            print(f"portrait: error: {weight.name}: {error}", file=sys.stderr)
        else:
            print(f"{weight.name}: fetched ({where})")
    return FAILED if failures else 0


def _fetch_one(weight: Weight, folder: Path) -> str:
    source = weight.source
    if isinstance(source, HubModel):
        return _fetch_hub(weight.name, source)
    path = folder / source.filename
    if source.url is None:
        raise MissingWeightsError(f"not downloadable automatically; get {source.filename} from {source.by_hand} "
                                  f"and put it in {folder}")  # fmt: skip
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise MissingWeightsError(f"HF_HUB_OFFLINE is set: download {source.url} and put it in {folder}")
    try:
        return str(download(source.url, path, source.size, source.sha256))
    except MissingWeightsError as error:
        raise MissingWeightsError(f"{error}; put {source.filename} in {folder} by hand, or rerun where that host "
                                  "answers") from error  # fmt: skip


def _fetch_hub(name: str, model: HubModel) -> str:
    cache = huggingface_hub.constants.HF_HUB_CACHE
    try:
        fetch_hub_model(model, name)
    except MissingWeightsError as error:
        cause = _hub_failure(error.__cause__ or error)
        raise MissingWeightsError(
            f"could not get {model.repo_id} from the Hugging Face hub ({cause}): run `portrait weights fetch {name}` "
            f"where the hub can be reached and copy its Hugging Face cache to {cache}"
        ) from error
    folder = cached_hub_folder(model)
    if folder is None:
        raise MissingWeightsError(f"{model.repo_id} was fetched but lacks some of: {', '.join(model.required)}")
    return str(folder)


def _hub_failure(error: BaseException) -> str:
    from huggingface_hub.errors import LocalEntryNotFoundError

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if isinstance(error, LocalEntryNotFoundError):  # what huggingface_hub raises when the hub does not answer
        return "the hub did not answer"
    return one_line(f"{type(error).__name__}: {error}")[:200]


def human_size(size: int | None, approximate: bool = False) -> str:
    if size is None:
        return "?"
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{'≈' if approximate else ''}{size / scale:.3g} {unit}"
    return f"{size} B"
