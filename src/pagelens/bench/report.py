"""What every `pagelens bench` command shares: machine info, the table, the JSON file and its docs section.

    report = Report("wire", {"pages": 16, "tokens": 755})   # bench name + the options it ran with
    report.describe("16 pages of (755, 128) unit vectors ...")  # what ran (printed, and in the docs)
    report.add_row({"encoding": "npz float16", "KB/page": 189.0})  # a table row: column -> value
    report.figures["ratio"] = 10.8                           # anything else worth keeping in the JSON
    report.finish()   # prints; writes bench-results/wire.json; rewrites docs/benchmarks.md's wire section

Rows go to the table named by `add_row(..., table="title")` (default: the untitled main table);
`report.machine` (CPU, cores, versions, git commit, ...) is filled at construction and takes extra keys
such as `bf16_matmul_gflops` (see `matmul_peak_gflops`). The docs section is the text between
`<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; everything outside the markers is left as written.
A document without the markers gets a new `## pagelens bench NAME` section appended.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DOCS = REPO_ROOT / "docs" / "benchmarks.md"
RESULTS_DIR = Path("bench-results")


def default_json_path(name: str) -> Path:
    """`bench-results/<name>.json`, relative to the working directory."""
    return RESULTS_DIR / f"{name}.json"


def command_line(name: str, args: dict[str, Any]) -> str:
    """The `pagelens bench NAME --option value ...` command that reproduces a run with these options."""
    parts = ["pagelens", "bench", name]
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list | tuple):
            parts.extend(item for element in value for item in (flag, str(element)))
        elif value is not None:
            parts.extend((flag, str(value)))
    return " ".join(parts)


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`, else `platform.processor()`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(wanted: tuple[str, ...] = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2")) -> list[str]:
    """Which of the matmul-relevant CPU flags this machine has."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    present = set(match.group(1).split()) if match else set()
    return [flag for flag in wanted if flag in present]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


OUTPUTS = ("docs/benchmarks.md", "bench-results")  # what the benches themselves rewrite


def git_commit() -> str | None:
    """HEAD of the repository this package runs from, `+dirty` when it has uncommitted changes (other than
    the benches' own outputs)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{path}" for path in OUTPUTS)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, flags, library versions, git commit and date of this run."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": usable,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "colpali_engine": _version("colpali-engine"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def matmul_peak_gflops(dtype: Any = None, size: int = 2048, repeats: int = 10, trials: int = 3) -> float:
    """Dense `size`^3 matmul throughput measured in this process, best of `trials` (the MFU denominator)."""
    import torch

    dtype = dtype or torch.bfloat16
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    best = float("inf")
    for _ in range(trials):
        started = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 * repeats / best / 1e9


def format_value(value: Any) -> str:
    """A table cell: floats to 3-4 significant figures, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value != value:  # NaN
        return "nan"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.1e}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of `rows` (columns: every key, in first-seen order; numbers right-aligned)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    numeric = {c: all(isinstance(r.get(c), int | float) or r.get(c) is None for r in rows) for c in columns}
    lines = [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---:" if numeric[c] and i else "---" for i, c in enumerate(columns)) + " |",
    ]
    lines += ["| " + " | ".join(format_value(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the body between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` replaced by `body`
    (markers kept); without those markers, a `## pagelens bench NAME` section holding them is appended."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip("\n") + f"\n\n## `pagelens bench {name}`\n\n{block}\n"


class Report:
    """One bench run: its options, machine, tables, extra figures and notes; `finish` publishes them."""

    def __init__(self, name: str, args: dict[str, Any], *, bench: str | None = None) -> None:
        """`name` names the JSON file and docs section; `bench` the command (default: `name`)."""
        self.name, self.args = name, dict(args)
        self.command = command_line(bench or name, self.args)
        self.machine = machine_info()
        self.description = ""
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.figures: dict[str, Any] = {}
        self.notes: list[str] = []
        self._started = time.perf_counter()

    def describe(self, text: str) -> None:
        """What ran (model, depth, batch, pages ...): printed first and shown above the tables."""
        self.description = text
        print(text, flush=True)

    def add_row(self, row: dict[str, Any], table: str = "") -> None:
        """Append a row (column -> value) to `table` ("" is the main, untitled table)."""
        self.tables.setdefault(table, []).append(dict(row))

    def note(self, text: str) -> None:
        """A line shown under the tables (a ratio against a bar, a parity figure ...)."""
        self.notes.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bench": self.name,
            "command": self.command,
            "args": self.args,
            "machine": self.machine,
            "description": self.description,
            "tables": {title or "main": rows for title, rows in self.tables.items()},
            "figures": self.figures,
            "notes": self.notes,
            "seconds": round(time.perf_counter() - self._started, 1),
        }

    def markdown(self) -> str:
        """The generated docs section: what ran, on what, the tables, the notes, the command."""
        m = self.machine
        peak = m.get("bf16_matmul_gflops")
        machine = (
            f"{m['cpu']}, {m['cores']} cores ({', '.join(m['cpu_flags']) or 'no AVX-512/AMX flags'}), "
            f"torch {m['torch']}, transformers {m['transformers']}, colpali-engine {m['colpali_engine']}"
            + (f"; bf16 matmul peak measured in this run: {peak:.0f} GFLOP/s" if peak else "")
        )
        parts = [f"_Generated by `{self.command}` on {m['date']} (commit {str(m['git_commit'])[:12]})._", ""]
        if self.description:
            parts += [self.description, ""]
        parts += [f"Machine: {machine}.", ""]
        for title, rows in self.tables.items():
            if title:
                parts += [f"**{title}**", ""]
            parts += [format_table(rows), ""]
        parts += [f"- {note}" for note in self.notes]
        return "\n".join(parts).strip()

    def finish(self, json_path: Path | None = None, docs_path: Path | None = DEFAULT_DOCS) -> dict[str, Any]:
        """Print the tables and notes; write the JSON (default `bench-results/NAME.json`); refresh the
        docs section unless `docs_path` is None. Returns what was written to the JSON."""
        for title, rows in self.tables.items():
            print(f"\n{title}" if title else "")
            print(format_table(rows))
        for line in self.notes:
            print(line)
        result = self.as_dict()
        json_path = Path(json_path) if json_path is not None else default_json_path(self.name)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {json_path}")
        if docs_path is not None:
            docs_path = Path(docs_path)  # a file not there yet is started (a run's figures are never lost to it)
            docs_path.parent.mkdir(parents=True, exist_ok=True)
            before = docs_path.read_text() if docs_path.exists() else f"# {self.name}\n"
            docs_path.write_text(replace_section(before, self.name, self.markdown()))
            print(f"updated the {self.name} section of {docs_path}")
        return result
