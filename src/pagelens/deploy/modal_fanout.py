"""Embedding fan-out on Modal: a large document set embedded by many GPU containers at once, into a
collection on a Qdrant server that `pagelens serve` replicas then search (service/fanout.py holds
the protocol; this module only places it on Modal).

    modal secret create pagelens-qdrant PAGELENS_QDRANT_URL=https://... PAGELENS_QDRANT_API_KEY=...
    modal run src/pagelens/deploy/modal_fanout.py --collection reports --paths a.pdf,b.pdf,scans/c.png \
        [--batch-pages 16] [--metadata '{"team": "finance"}'] [--retries 2]

1. Here, on your machine: the files are uploaded to the Modal volume `<app>-documents` under a
   run directory.
2. `coordinate` (a CPU container) plans the page batches, opens or creates the collection with the
   model's binding (asked of one GPU container), maps the batches over `FanoutEmbedder`
   containers (up to PAGELENS_MODAL_FANOUT_CONTAINERS, each embedding a batch at a time with the
   engine's page batching), retries the failed ones, marks each whole document complete once,
   and returns a report; the run directory is then removed.
3. Re-running the same files skips the documents already complete.

Deploy-time settings are those of modal_app.py (ModalSettings: the GPU, the model, the hub secret)
plus PAGELENS_MODAL_QDRANT_SECRET (the secret above) and PAGELENS_MODAL_FANOUT_CONTAINERS (20).
Settings a worker reads (device, dtype, attention, PAGELENS_QDRANT_PREFIX ...) are the container's
PAGELENS_* variables, as for `pagelens serve`.
"""

# No `from __future__ import annotations`: Modal reads the parameter annotations as real types.

import json
import uuid
from pathlib import Path

import modal

from pagelens.deploy.modal_app import CACHE_DIR, DEPLOY, GPU, HF_SECRET, MODEL, TIMEOUT, cache_volume, image
from pagelens.settings import Settings

APP_NAME = f"{DEPLOY.app}-fanout"
DOCUMENTS_DIR = "/documents"
FANOUT_CONTAINERS = DEPLOY.fanout_containers
COORDINATOR_TIMEOUT = 24 * 3600  # seconds: the whole set

app = modal.App(APP_NAME)
documents_volume = modal.Volume.from_name(f"{DEPLOY.app}-documents", create_if_missing=True)
qdrant_secret = modal.Secret.from_name(DEPLOY.qdrant_secret)


@app.cls(
    image=image,
    gpu=GPU,
    volumes={CACHE_DIR: cache_volume, DOCUMENTS_DIR: documents_volume},
    secrets=[modal.Secret.from_name(HF_SECRET), qdrant_secret],
    max_containers=FANOUT_CONTAINERS,
    timeout=TIMEOUT,
)
@modal.concurrent(max_inputs=2)  # one batch renders while the other is on the GPU
class FanoutEmbedder:
    """A GPU container: the model loaded once, then page batches written into Qdrant, two at a time."""

    model_name: str = modal.parameter(default=MODEL)

    @modal.enter()
    def start(self) -> None:
        from pagelens.service.fanout import FanoutWorker

        self.worker = FanoutWorker.from_settings(Settings(model=self.model_name), root=DOCUMENTS_DIR)

    @modal.method()
    def binding(self):
        return self.worker.binding()

    @modal.method()
    def embed(self, batch, collection: str) -> int:
        """Pages written for `batch` (a service.fanout.PageBatch)."""
        if not (Path(DOCUMENTS_DIR) / batch.document.path).exists():
            documents_volume.reload()  # uploaded after this container started
        return self.worker.embed(collection, batch)

    @modal.exit()
    def stop(self) -> None:
        self.worker.close()


@app.function(image=image, volumes={DOCUMENTS_DIR: documents_volume}, secrets=[qdrant_secret],
              timeout=COORDINATOR_TIMEOUT)  # fmt: skip
def coordinate(collection: str, run: str, paths: list, batch_pages: int, metadata: dict, retries: int) -> dict:
    """Plan, open the collection, map the batches, mark documents complete: the report as a dict."""
    from pagelens.service.fanout import fan_out, plan_fanout, qdrant_client

    documents_volume.reload()
    settings = Settings(model=MODEL)
    plan = plan_fanout(DOCUMENTS_DIR, [f"{run}/{path}" for path in paths], batch_pages=batch_pages, metadata=metadata)
    embedder = FanoutEmbedder()

    def map_batches(batches):
        return embedder.embed.map(batches, kwargs={"collection": collection}, return_exceptions=True)

    client = qdrant_client(settings)
    try:
        report = fan_out(client, collection, embedder.binding.remote(), plan, map_batches,
                         prefix=settings.qdrant_prefix, retries=retries)  # fmt: skip
    finally:
        client.close()
    return report.as_dict()


@app.local_entrypoint()
def main(collection: str, paths: str, batch_pages: int = 16, metadata: str = "", retries: int = 2) -> None:
    """Upload `paths` (comma-separated files) and fan their pages out into `collection`."""
    files = [Path(path).expanduser() for path in paths.split(",") if path.strip()]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise SystemExit(f"no such file(s): {', '.join(missing)}")
    run = uuid.uuid4().hex[:12]
    names = [f"{number:05d}/{path.name}" for number, path in enumerate(files)]  # two files may share a name
    with documents_volume.batch_upload() as upload:
        for path, name in zip(files, names, strict=True):
            upload.put_file(path, f"/{run}/{name}")
    try:
        report = coordinate.remote(collection, run, names, batch_pages, json.loads(metadata or "{}"), retries)
    finally:
        documents_volume.remove_file(f"/{run}", recursive=True)
    print(json.dumps(report, indent=2))
    if report["failed"]:
        raise SystemExit(1)
