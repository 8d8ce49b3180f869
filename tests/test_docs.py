"""docs/method.md points a reader to files and tests: every one it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_file_and_test_that_docs_method_names_exists():
    text = (REPO / "docs" / "method.md").read_text()
    files = set(
        re.findall(
            r"`((?:portrait|train|evaluation|tests|benchmarks|experiments|webui|docs|assets)/[\w/.-]+\.(?:py|yaml|json|md))",
            text,
        )
    )
    files |= {f"train/configs/{name}" for name in re.findall(r"`([\w-]+\.yaml)`", text)}
    assert files and all((REPO / name).is_file() for name in files), sorted(
        name for name in files if not (REPO / name).is_file()
    )
    for path, names in re.findall(r"`(tests/[\w/]+\.py)((?:::\w+)+)`", text):
        source = (REPO / path).read_text()
        for name in names.split("::")[1:]:
            assert f"def {name}(" in source, f"{path}::{name}"
    for name in re.findall(r"`(test_\w+)`", text):  # tests named without their file
        assert any(f"def {name}(" in p.read_text() for p in (REPO / "tests").glob("test_*.py")), name
