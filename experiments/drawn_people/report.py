"""The statistics over split seeds (means with 95 % intervals, paired tests over people), the markdown
tables and the picture grid of the drawn-people experiment."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .heldout import PAIR_MODES, seed_interval, sign_flip_p
from .world import EXPRESSIONS

LABELS = {"untrained": "untrained (base, STEA zero)", "full": "full (STEA + DIP + ECAC)", "no_face": "no face feature (text only)",
          "no_stea": "w/o STEA (CLIP image features, encoder trained)", "no_dip": "w/o DIP", "no_ecac": "w/o ECAC"}  # fmt: skip
GROUPS = {"test": "test people (new combinations of seen trait values)",
          "novel": "novel people (a skin tone or hair colour no training frame shows)",
          "validation": "validation people (for choosing settings)"}  # fmt: skip
MEASURES = ("id_acc", "id_sim", "expr_acc", "expr_leak", "attn_id_in_mask", "attn_expr_in_mask")
PAIR_MEASURES = ("right_person", "swapped", "expr_acc", "cost_ratio")
GRID_COLUMNS = {"full": "full", "no_face": "no face", "no_stea": "w/o STEA (CLIP)", "no_ecac": "w/o ECAC"}


def aggregate(per_seed: dict[int, dict], groups: tuple[str, ...], permutations: int) -> dict:
    """Seed-level means with 95 % t intervals, and one-sided paired sign-flip tests over every seed's people:
    does `full` identify better than each other row, and better than the word-only ceiling?"""
    seeds = sorted(per_seed)
    summary: dict = {"chance": {}, "rows": {}, "tests": {}, "pairs": {}}
    for group in groups:
        names = list(per_seed[seeds[0]]["groups"][group])  # the rows this scale judged, untrained first
        rows = {name: [per_seed[s]["groups"][group][name] for s in seeds] for name in names}
        chances = [row["chance"] for row in rows["full"]]
        summary["chance"][group] = {
            key: round(float(np.mean([c[key] for c in chances])), 4) for key in ("identification", "word_only_ceiling", "expression_best_constant")
        } | {"face_area": round(float(np.mean([row["mask_area"] for row in rows["full"]])), 4)}  # fmt: skip
        summary["rows"][group] = {
            name: {measure: _interval([row[measure] for row in rows[name]]) for measure in MEASURES} for name in names
        }
        full = np.concatenate([row["per_person"]["id_acc"] for row in rows["full"]])
        ceiling = np.concatenate([c["word_only_ceiling_per_person"] for c in chances])
        tests = {"full_vs_word_only_ceiling": _test(full - ceiling, permutations)}
        for name in names:
            if name != "full":
                other = np.concatenate([row["per_person"]["id_acc"] for row in rows[name]])
                tests[f"full_vs_{name}"] = _test(full - other, permutations)
        summary["tests"][group] = tests
    if all(per_seed[s]["pairs"] for s in seeds):
        summary["pairs"] = {
            mode: {
                measure: _interval([per_seed[s]["pairs"][mode][measure] for s in seeds]) for measure in PAIR_MEASURES
            }
            for mode in PAIR_MODES
        }
    return summary


def _interval(values: list[float]) -> dict:
    mean, low, high = seed_interval(values)
    return {
        "mean": round(mean, 4),
        "low": round(low, 4),
        "high": round(high, 4),
        "per_seed": [round(v, 4) for v in values],
    }


def _test(differences: np.ndarray, permutations: int) -> dict:
    return {
        "difference": round(float(differences.mean()), 4),
        "people": len(differences),
        "p": sign_flip_p(differences, permutations),
    }


# ------------------------------------------------------------------ reporting
def markdown_tables(summary: dict, seeds: list[int], groups: tuple[str, ...]) -> str:
    """The tables of `summary` (from `aggregate` over the split seeds `seeds`), in markdown."""

    def cell(value: dict) -> str:
        if len(seeds) < 2:
            return f"{value['mean']:.2f}"
        return f"{value['mean']:.2f} [{value['low']:.2f}, {value['high']:.2f}]"

    lines = []
    for group in groups:
        rows, tests, chance = summary["rows"][group], summary["tests"][group], summary["chance"][group]
        people = tests["full_vs_word_only_ceiling"]["people"]
        lines += [
            f"**{GROUPS[group]}**: {len(seeds)} split seeds, {people} people in all; mean [95 % interval over seeds]",
            "",
            "| run | identification | identity similarity | expression accuracy | expression leak | identity-token attention in face "
            "| expression-token attention in face | full − this run, identification (p over people) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            test = tests.get(f"full_vs_{name}")
            versus = f"{test['difference']:+.2f} (p {test['p']:.2g})" if test else "–"
            lines.append(
                f"| {LABELS[name]} | {cell(row['id_acc'])} | {cell(row['id_sim'])} | {cell(row['expr_acc'])} | "
                f"{cell(row['expr_leak'])} | {cell(row['attn_id_in_mask'])} | {cell(row['attn_expr_in_mask'])} | {versus} |"
            )
        ceiling = tests["full_vs_word_only_ceiling"]
        lines += [
            f"| *chance* | {chance['identification']:.2f} (1 of K); word-only ceiling {chance['word_only_ceiling']:.2f} | – "
            f"| {chance['expression_best_constant']:.2f} (best constant answer; every expression asked equally) | – "
            f"| {chance['face_area']:.2f} (the face's share of the picture) | {chance['face_area']:.2f} "
            f"| full − word-only ceiling: {ceiling['difference']:+.2f} (p {ceiling['p']:.2g}) |",
            "",
            f"Identification per seed ({group}):",
            "",
            "| run | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---|" + "---|" * len(seeds),
        ]
        lines += [
            f"| {LABELS[name]} | " + " | ".join(f"{v:.2f}" for v in row["id_acc"]["per_seed"]) + " |"
            for name, row in rows.items()
        ]
        lines.append("")
    if summary["pairs"]:
        lines += [
            f"**Two test people in one picture** (full model, each in their own half; {len(seeds)} seeds; mean [95 % interval over seeds])",
            "",
            "| made | right person in their half | swapped (the other person read) | expression per person | time vs one person |",
            "|---|---|---|---|---|",
        ]
        names = {
            "regions": "regions (MultiDiffusion, the paper)",
            "one-pass": "one pass (both words augmented in one prompt)",
        }
        for mode, row in summary["pairs"].items():
            lines.append(
                f"| {names[mode]} | {cell(row['right_person'])} | {cell(row['swapped'])} | {cell(row['expr_acc'])} "
                f"| {cell(row['cost_ratio'])}× |"
            )
        lines.append("")
    return "\n".join(lines)


def picture_grid(people: list, examples: dict[str, dict], count: int = 6, scale: int = 3) -> Image.Image:
    """Rows: (held-out person, asked expression); columns: the reference frame, then a run's first image
    (the runs of GRID_COLUMNS that `examples` holds)."""
    columns = {name: GRID_COLUMNS[name] for name in examples}
    size = people[0].frame.shape[-1] * max(scale, 96 // people[0].frame.shape[-1])
    label = 14
    chosen = [
        (person, expression) for person in people for expression in EXPRESSIONS if expression != person.expression
    ]
    chosen = chosen[:: max(1, len(chosen) // count)][:count]
    grid = Image.new("RGB", ((len(columns) + 1) * size, label + len(chosen) * size), "white")
    draw = ImageDraw.Draw(grid)
    for column, title in enumerate(("held-out reference", *columns.values())):
        draw.text((column * size + 2, 1), title, fill="black")
    for row, (person, expression) in enumerate(chosen):
        top = label + row * size
        frame = ((person.frame.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
        grid.paste(Image.fromarray(frame).resize((size, size), Image.NEAREST), (0, top))
        draw.text(
            (2, top + 2), f"{person.expression} -> {expression}", fill="white", stroke_width=1, stroke_fill="black"
        )
        for column, name in enumerate(columns, start=1):
            image = Image.fromarray(examples[name][(str(person.index), expression)])
            grid.paste(image.resize((size, size), Image.NEAREST), (column * size, top))
    return grid
