"""Checks shared by the bench command tests: a temp copy of docs/benchmarks.md and what publishing must leave."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pagelens.bench.report import DEFAULT_DOCS

MACHINE_KEYS = {"cpu", "cores", "cpu_flags", "torch", "transformers", "colpali_engine", "git_commit", "date"}


def doc_copy(tmp_path: Path) -> Path:
    """A copy of the real docs/benchmarks.md to let a bench rewrite."""
    copy = tmp_path / "benchmarks.md"
    shutil.copy(DEFAULT_DOCS, copy)
    return copy


def assert_published(name: str, json_path: Path, docs: Path, *, table_rows: int) -> dict[str, Any]:
    """The JSON has the run's command, machine and tables; only NAME's docs section changed, to this run."""
    written = json.loads(json_path.read_text())
    assert written["bench"] == name and written["command"].startswith(f"pagelens bench {name}")
    assert set(written["machine"]) >= MACHINE_KEYS
    assert sum(len(rows) for rows in written["tables"].values()) == table_rows
    original, text = DEFAULT_DOCS.read_text(), docs.read_text()
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    assert original.count(start) == 1 and text.count(start) == 1, "the real doc must carry the markers"
    section = text.split(start)[1].split(end)[0]
    assert written["command"] in section and written["machine"]["date"] in section
    assert text.split(start)[0] == original.split(start)[0] and text.split(end)[1] == original.split(end)[1]
    return written
