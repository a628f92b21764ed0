"""The search bench's collection: an Edge page store of a synthetic corpus, the reference's rows
file beside it, and what the store costs on disk and in RAM.

    <directory>/store          the Qdrant Edge shard     \\ the store under test
    <directory>/store.mirror   its vector mirror          /
    <directory>/rows.f16       every page's float16 rows in page order (bench/brute_force.py)
    <directory>/corpus.json    which corpus all three hold (a match is reused, not rebuilt)

A build runs in a process of its own, with single-threaded BLAS, storing pages that worker
processes generate meanwhile (bench/page_workers.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pagelens.bench.brute_force import DIM, RowsFile, RowsWriter, write_rows_file
from pagelens.bench.page_workers import corpus_pages, default_workers
from pagelens.bench.synthetic_pages import BACKGROUND, OWN_CONCEPTS, SyntheticCorpus
from pagelens.errors import BackendFailure
from pagelens.index.edge_store import EdgePageStore
from pagelens.index.pages import POOLED_ROWS

DEFAULT_SHAPE = {"own_concepts": OWN_CONCEPTS, "background": BACKGROUND}
ROWS_FILE = "rows.f16"
PROGRESS_PAGES = 1000
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class BuildTimes:
    """Where a build's seconds went (all zero when the store was reused)."""

    seconds: float = 0.0
    add_document_seconds: float = 0.0  # the store: k-means centroids, the mirror's rows, Qdrant Edge's points
    waiting_for_pages_seconds: float = 0.0  # page generation not keeping up with the store
    rows_file_seconds: float = 0.0  # writing the reference's rows file
    workers: int = 0

    def as_figures(self) -> dict[str, float]:
        return {key: round(value, 1) for key, value in asdict(self).items()}


def float16_vector_bytes(corpus: SyntheticCorpus) -> int:
    """The corpus' page rows as float16: the unit the disk bar is measured in."""
    return int(corpus.tokens.sum()) * DIM * 2


def rows_file(directory: Path, corpus: SyntheticCorpus) -> RowsFile:
    return RowsFile(Path(directory) / ROWS_FILE, corpus.tokens)


def _rows_file_ok(directory: Path, corpus: SyntheticCorpus) -> bool:
    path = directory / ROWS_FILE
    return path.exists() and path.stat().st_size == float16_vector_bytes(corpus)


def build_store(
    directory: Path, corpus: SyntheticCorpus, *, workers: int | None = None, times: BuildTimes | None = None
) -> EdgePageStore:
    """The store of `corpus` under `directory` (open), with its rows file; built unless a previous
    run left the same corpus there. `workers`: page-generating processes (bench/page_workers.py);
    `times` is filled with where a build's time went. A build runs in a process of its own
    (`_build_files`) with single-threaded BLAS."""
    directory = Path(directory)
    times = times if times is not None else BuildTimes()
    stamp = directory / "corpus.json"
    shape = {"own_concepts": corpus.own_concepts, "background": corpus.background_share}
    wanted = {"pages": corpus.pages, "seed": corpus.seed, "pooled_rows": POOLED_ROWS} | shape  # new layout: rebuild
    if stamp.exists() and DEFAULT_SHAPE | json.loads(stamp.read_text()) == wanted:  # older stamps: default shape
        store = EdgePageStore(directory / "store")
        if store.page_count() == corpus.pages:
            if not _rows_file_ok(directory, corpus):  # a store from before the rows file existed
                started = time.perf_counter()
                write_rows_file(directory / ROWS_FILE, corpus_pages(corpus, workers=workers))
                times.rows_file_seconds = time.perf_counter() - started
            return store
        store.close()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    workers = default_workers() if workers is None else workers
    built = _build_in_a_process(directory, corpus, workers)
    for field in fields(BuildTimes):
        setattr(times, field.name, built[field.name])
    stamp.write_text(json.dumps(wanted))
    return EdgePageStore(directory / "store")


BUILD_SCRIPT = """
import json, sys
from dataclasses import asdict
from pathlib import Path
from pagelens.bench.search_store import _build_files
from pagelens.bench.synthetic_pages import SyntheticCorpus
job = json.loads(sys.argv[1])
corpus = SyntheticCorpus(**job["corpus"])
print(json.dumps(asdict(_build_files(Path(job["directory"]), corpus, job["workers"]))))
"""


def _build_in_a_process(directory: Path, corpus: SyntheticCorpus, workers: int) -> dict[str, float]:
    """`_build_files` in a fresh interpreter with one BLAS/OpenMP thread (read when numpy and torch
    load, so only a new process can have it; its page workers inherit it): `BuildTimes` as a dict.

    The store's k-means (`cluster_pool`) runs small numpy matmuls; with OpenBLAS's default two
    threads on two cores that are also running the page workers (or anything else), they wait for
    each other: measured 162 ms a page against 6.8 ms single-threaded on busy cores, 6.3 against
    6.0 on quiet ones."""
    job = {"directory": str(directory), "workers": workers,
           "corpus": {"pages": corpus.pages, "seed": corpus.seed, "pages_per_document": corpus.pages_per_document,
                      "own_concepts": corpus.own_concepts, "background": corpus.background_share}}  # fmt: skip
    single_threaded = dict.fromkeys(BLAS_THREAD_VARIABLES, "1")
    return _run_script(BUILD_SCRIPT, json.dumps(job), failure="building the bench store",
                       env={**os.environ, **single_threaded})  # fmt: skip


def _run_script(script: str, argument: str, *, failure: str, env: dict[str, str] | None = None) -> dict:
    """Run `script` in a fresh interpreter with one argument; its last line of output, as JSON.
    BackendFailure naming `failure` (and the end of its error output) when it fails."""
    finished = subprocess.run([sys.executable, "-c", script, argument], capture_output=True, text=True, env=env)
    if finished.returncode != 0:
        raise BackendFailure(f"{failure} failed: {finished.stderr.strip()[-2000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _build_files(directory: Path, corpus: SyntheticCorpus, workers: int) -> BuildTimes:
    """Write the store of `corpus` and its rows file under the empty `directory` (pages from
    `workers` processes); return where the time went. Run in a process of its own."""
    times = BuildTimes(workers=workers)
    store = EdgePageStore(directory / "store")
    started = time.perf_counter()
    pages = corpus_pages(corpus, workers=workers)
    per_document = corpus.pages_per_document
    try:
        with RowsWriter(directory / ROWS_FILE) as rows:
            for first in range(0, corpus.pages, per_document):
                clock = time.perf_counter()
                document = [next(pages) for _ in range(first, min(first + per_document, corpus.pages))]
                times.waiting_for_pages_seconds += time.perf_counter() - clock
                clock = time.perf_counter()
                rows.write(document)
                times.rows_file_seconds += time.perf_counter() - clock
                clock = time.perf_counter()
                store.add_document(f"doc{first // per_document:05d}", document)
                times.add_document_seconds += time.perf_counter() - clock
                done = first + len(document)
                if done % PROGRESS_PAGES < per_document and done < corpus.pages:
                    rate = done / (time.perf_counter() - started)
                    print(f"  stored {done}/{corpus.pages} pages ({rate:.0f} pages/s)", flush=True)
    finally:
        store.close()
    times.seconds = time.perf_counter() - started
    return times


def directory_bytes(directory: Path, *, allocated: bool = True) -> int:
    """Bytes the files under `directory` take on disk (blocks allocated, as `du` counts them), or
    their sizes (`allocated=False`). They differ for Qdrant Edge's write-ahead log, whose 32 MiB
    segments are sparse files: a 10k-page shard measured 152 MB by size, 4.4 MB allocated."""
    files = [path.stat() for path in Path(directory).rglob("*") if path.is_file()]
    return sum(stat.st_blocks * 512 if allocated else stat.st_size for stat in files)


def disk_figures(store: EdgePageStore, corpus: SyntheticCorpus) -> dict[str, int | float | dict[str, int]]:
    """The store's bytes on disk (allocated) by part (the shard, the mirror), their apparent sizes,
    each mirror file's size, and the disk as a ratio to the corpus' float16 vectors (the reference's
    rows file is not the store's)."""
    parts = {"shard": directory_bytes(store.directory), "mirror": directory_bytes(store.mirror.directory)}
    sizes = {name: directory_bytes(path, allocated=False)
             for name, path in (("shard", store.directory), ("mirror", store.mirror.directory))}  # fmt: skip
    files = sorted(path for path in store.mirror.directory.iterdir() if path.is_file())
    mirror_files = {path.name: path.stat().st_size for path in files}
    vectors = float16_vector_bytes(corpus)
    ratio = round(sum(parts.values()) / vectors, 3)
    return {"disk_bytes": parts, "apparent_bytes": sizes, "mirror_file_bytes": mirror_files,
            "float16_vector_bytes": vectors, "disk_over_float16_vectors": ratio}  # fmt: skip


MEMORY_PROBE = """
import json, sys, time
from pagelens.bench.proc_status import memory_status
from pagelens.index.edge_store import EdgePageStore

before = memory_status()["VmRSS"]
clock = time.perf_counter()
store = EdgePageStore(sys.argv[1])
store.mirror.warm()
opened = time.perf_counter() - clock
after = memory_status()
print(json.dumps({"rss_before_open_bytes": before, "rss_after_open_bytes": after["VmRSS"],
                  "anonymous_rss_after_open_bytes": after.get("RssAnon"),
                  "file_rss_after_open_bytes": after.get("RssFile"),
                  "peak_rss_bytes": after["VmHWM"], "open_seconds": round(opened, 2),
                  "centroid_ram_bytes": store.mirror.centroid_bytes}))
store.close()
"""


def memory_figures(store_directory: Path) -> dict[str, int | float | None]:
    """RAM of a fresh process that only imports pagelens' store and opens (and warms) the closed
    store at `store_directory`: RSS before and after (after: also split into anonymous memory and
    the pages of memory-mapped files it read, which the kernel may drop), its peak, the centroids'
    bytes, seconds to open. BackendFailure when the probe fails (its error output in the message)."""
    return _run_script(MEMORY_PROBE, str(store_directory), failure=f"opening {store_directory} in a fresh process")


def page_index(hit, per_document: int) -> int:
    """The corpus page index of a search hit (documents are `doc<n>` of `per_document` pages)."""
    return int(hit.document_id[3:]) * per_document + hit.page - 1
