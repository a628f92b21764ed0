"""`pagelens bench coldstart`: process start -> first embedding served over HTTP, against the floor
of a fresh process that only imports colpali-engine and runs `from_pretrained` on the same model.

Both run as new Python processes, alternately, `repeats` times; the table shows each median.

The mmap check saves a random-weight checkpoint of a published architecture (full depth, bf16
safetensors) and loads it with `from_pretrained` in a fresh process: load time, RSS growth (anonymous
vs file-backed, from /proc/self/status), and how many weight bytes live inside a mapping of the
.safetensors file (each parameter's data pointer against /proc/self/maps): 100% means the weights
are served from the page cache by mmap, 0% that they were copied into private memory.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from pagelens.bench.report import DEFAULT_DOCS, Report
from pagelens.testing.servers import free_port

FLOOR_SCRIPT = """
import sys, time
started = float(sys.argv[2])
from pagelens.models.families import detect_family
from pagelens.models.checkpoints import resolve_checkpoint
checkpoint = resolve_checkpoint(sys.argv[1])
family = detect_family(checkpoint.config)
model_class, processor_class = family.classes()
family.from_pretrained(checkpoint.weights_dir, dtype="auto")
processor_class.from_pretrained(checkpoint.processor_dir)
print(time.time() - started)
"""


def floor_seconds(model: str) -> float:
    """A fresh process: import colpali-engine + from_pretrained (model and processor)."""
    started = time.time()
    output = subprocess.run(
        [sys.executable, "-c", FLOOR_SCRIPT, model, repr(started)], capture_output=True, text=True, check=True
    ).stdout
    return float(output.strip().splitlines()[-1])


def served_seconds(model: str, device: str) -> float:
    """A fresh `pagelens serve`: process start until the first /embeddings answer arrives."""
    port = free_port()
    command = [sys.executable, "-m", "pagelens.cli", "serve", "--model", model, "--port", str(port), "--device", device,
               "--no-auth"]  # fmt: skip
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/embeddings", json={"input_type": "text", "inputs": ["hi"]}, timeout=60
                )
                if response.status_code == 200:
                    return time.time() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(30)


MMAP_SCRIPT = """
import json, re, sys, time
from pathlib import Path
from pagelens.bench.proc_status import memory_status as status

import torch
from pagelens.models.families import get_family
family = get_family(sys.argv[2])
family.classes()
before = status()
started = time.perf_counter()
model = family.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
seconds = time.perf_counter() - started
after = status()
ranges, mapped_rss = [], 0
current = None
for line in Path("/proc/self/smaps").read_text().splitlines():
    head = re.match(r"([0-9a-f]+)-([0-9a-f]+) \\S+ \\S+ \\S+ \\S+\\s*(.*)$", line)
    if head:
        current = head.group(3).endswith(".safetensors")
        if current:
            ranges.append((int(head.group(1), 16), int(head.group(2), 16)))
    elif current and line.startswith("Rss:"):
        mapped_rss += int(line.split()[1]) * 1024
params = [p for p in model.parameters()] + [b for b in model.buffers()]
total = sum(p.numel() * p.element_size() for p in params)
inside = sum(p.numel() * p.element_size() for p in params if any(lo <= p.data_ptr() < hi for lo, hi in ranges))
print(json.dumps({"load_s": seconds, "weight_bytes": total, "weight_bytes_in_file_mappings": inside,
                  "safetensors_mappings": len(ranges), "safetensors_rss_bytes": mapped_rss,
                  "rss_growth_bytes": after["VmRSS"] - before["VmRSS"],
                  "anon_growth_bytes": after["RssAnon"] - before["RssAnon"],
                  "file_growth_bytes": after["RssFile"] - before["RssFile"]}))
"""


def mmap_check(arch_name: str, scratch: Path) -> dict[str, Any]:
    """Save `arch_name` (full depth, random bf16 weights) and load it in a fresh process; see the module doc."""
    import torch

    from pagelens.bench.models import get_arch

    bench_model = get_arch(arch_name).build(scratch / "build")
    directory = scratch / "checkpoint"
    model = bench_model.model("sdpa", torch.bfloat16)
    model.save_pretrained(directory)
    del model
    files = list(directory.glob("*.safetensors"))
    output = subprocess.run(
        [sys.executable, "-c", MMAP_SCRIPT, str(directory), bench_model.arch.family],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    figures = json.loads(output.strip().splitlines()[-1])
    figures["checkpoint_bytes"] = sum(f.stat().st_size for f in files)
    figures["mmapped_fraction"] = figures["weight_bytes_in_file_mappings"] / max(1, figures["weight_bytes"])
    figures["arch"], figures["depth"] = arch_name, bench_model.depth
    return figures


def run(
    *,
    model: str | None = None,
    device: str = "cpu",
    repeats: int = 3,
    mmap_arch: str | None = "colmodernvbert",
    args: dict[str, Any] | None = None,
    json_path: Path | None = None,
    docs_path: Path | None = DEFAULT_DOCS,
) -> dict[str, Any]:
    """Median seconds of each, their ratio (bar, issue #4: served <= 1.3 x floor), and the mmap check."""
    report = Report("coldstart", args if args is not None else {"model": model, "repeats": repeats})
    with tempfile.TemporaryDirectory() as scratch:
        label = model or "a tiny ColQwen2.5 built offline (import-dominated)"
        if model is None:
            from pagelens.testing import build_tiny_checkpoint

            model = str(build_tiny_checkpoint("colqwen2_5", Path(scratch) / "tiny"))
        report.describe(
            f"Model: {label}, device {device}. Fresh processes, alternately, median of {repeats}: "
            "`pagelens serve` from process start until the first `/embeddings` answer, against a process that "
            "only imports colpali-engine and runs `from_pretrained` (model + processor) on the same checkpoint."
        )
        floors, served = [], []
        for _ in range(repeats):
            floors.append(floor_seconds(model))
            served.append(served_seconds(model, device))
        mmap = mmap_check(mmap_arch, Path(scratch) / "mmap") if mmap_arch else None
    floor, serve = statistics.median(floors), statistics.median(served)
    report.add_row({"measure": "import + from_pretrained", "seconds": floor})
    report.add_row({"measure": "pagelens serve -> first embedding", "seconds": serve})
    report.add_row({"measure": "ratio (bar <= 1.3)", "seconds": serve / floor})
    report.figures.update(floor_s=floor, served_s=serve, ratio=serve / floor, floor_runs=floors, served_runs=served)
    if mmap is not None:
        report.figures["mmap"] = mmap
        title = f"from_pretrained of a saved {mmap['arch']} checkpoint ({mmap['depth']}, random bf16 weights)"
        mib = 1024 * 1024
        for measure, value in (
            ("checkpoint .safetensors MiB", mmap["checkpoint_bytes"] / mib),
            ("load seconds", mmap["load_s"]),
            ("RSS growth MiB", mmap["rss_growth_bytes"] / mib),
            ("of which anonymous (private copies) MiB", mmap["anon_growth_bytes"] / mib),
            ("of which file-backed MiB", mmap["file_growth_bytes"] / mib),
            ("weights inside a .safetensors mapping %", 100 * mmap["mmapped_fraction"]),
        ):
            report.add_row({"measure": measure, "value": value}, table=title)
        state = "memory-mapped" if mmap["mmapped_fraction"] > 0.5 else "copied out of the file mapping"
        report.note(
            f"{100 * mmap['mmapped_fraction']:.0f}% of the weight bytes point into the .safetensors mapping after "
            f"from_pretrained: the weights are {state}."
        )
    report.note(f"serve -> first embedding = {serve / floor:.2f} x import + from_pretrained (bar, issue #4: <= 1.3).")
    return report.finish(json_path, docs_path)
