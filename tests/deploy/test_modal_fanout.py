"""The fan-out's Modal app imports with no credentials and no network, declares a GPU worker class
and a CPU coordinator, and its worker methods call the tested body (tests/service/test_fanout.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_module_imports_without_modal_credentials_and_declares_a_gpu_worker(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "PAGELENS_MODAL_"))}
    env |= {"HOME": str(tmp_path), "PAGELENS_MODAL_GPU": "H100", "PAGELENS_MODAL_FANOUT_CONTAINERS": "7"}
    code = (
        "import pagelens.deploy.modal_fanout as m\n"
        "worker = m.FanoutEmbedder._get_class_service_function()._spec_\n"
        "print(m.app.name, worker.gpus, m.coordinate._spec_.gpus, m.FANOUT_CONTAINERS)\n"
        "print(sorted(m.FanoutEmbedder._get_partial_functions()))\n"
        "print(sorted(worker.volumes), sorted(m.coordinate._spec_.volumes))\n"
        "print(sorted(map(repr, m.coordinate._spec_.secrets)), sorted(map(repr, worker.secrets)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["pagelens-fanout", "H100", "None", "7"], "the worker has the GPU, the coordinator none"
    assert lines[1] == "['binding', 'embed', 'start', 'stop']"
    assert lines[2] == "['/cache', '/documents'] ['/documents']"
    qdrant, hub = "modal.Secret.from_name('pagelens-qdrant')", "modal.Secret.from_name('huggingface-secret')"
    assert lines[3] == str([qdrant]) + " " + str([hub, qdrant]), "both reach Qdrant through the secret"


def test_the_worker_methods_run_the_fanout_worker(monkeypatch):
    from pagelens.deploy import modal_fanout

    calls = []

    class Worker:
        def embed(self, collection, batch):
            calls.append((collection, batch))
            return 3

        def binding(self):
            return "binding"

    user_cls = modal_fanout.FanoutEmbedder._get_user_cls()
    container = user_cls.__new__(user_cls)
    container.worker = Worker()
    methods = modal_fanout.FanoutEmbedder._get_partial_functions()

    class Batch:
        class document:
            path = "run/00000/a.pdf"

    monkeypatch.setattr(modal_fanout.documents_volume, "reload", lambda: calls.append("reload"))
    assert methods["embed"]._get_raw_f()(container, Batch, "reports") == 3
    assert calls == ["reload", ("reports", Batch)], "a file not seen yet makes the container reload the volume"
    assert methods["binding"]._get_raw_f()(container) == "binding"


def test_deploy_settings_of_the_fanout(monkeypatch):
    from pagelens.deploy.modal_settings import ModalSettings

    monkeypatch.delenv("PAGELENS_MODAL_QDRANT_SECRET", raising=False)
    monkeypatch.delenv("PAGELENS_MODAL_FANOUT_CONTAINERS", raising=False)
    assert (ModalSettings().qdrant_secret, ModalSettings().fanout_containers) == ("pagelens-qdrant", 20)
    monkeypatch.setenv("PAGELENS_MODAL_QDRANT_SECRET", "qd")
    monkeypatch.setenv("PAGELENS_MODAL_FANOUT_CONTAINERS", "50")
    assert (ModalSettings().qdrant_secret, ModalSettings().fanout_containers) == ("qd", 50)


@pytest.mark.filterwarnings("ignore:The coordinate function is executing locally")
def test_the_coordinator_runs_the_fanout_over_its_workers(monkeypatch, tmp_path, tiny_model):
    """`coordinate`'s own body on this machine: its `FanoutEmbedder` containers replaced by in-process
    workers over the tiny model and its Qdrant by local mode; the files as the entry point uploads them."""
    from qdrant_client import QdrantClient

    from pagelens.deploy import modal_fanout
    from pagelens.service import Runtime, fanout
    from pagelens.settings import Settings
    from tests.conftest import encode, make_page
    from tests.index.test_pdf import make_pdf

    run = tmp_path / "documents" / "run1"
    for number, (name, data) in enumerate([("a.pdf", make_pdf(3)), ("b.png", encode(make_page(120, 160, 2)))]):
        (run / f"{number:05d}").mkdir(parents=True)
        (run / f"{number:05d}" / name).write_bytes(data)
    runtime = Runtime(Settings(model=str(tiny_model), device="cpu", dtype="float32", data_dir=str(tmp_path))).start()
    qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    worker = fanout.FanoutWorker(runtime, qdrant, root=tmp_path / "documents")
    calls = []

    class Method:
        def __init__(self, function):
            self.function = function

        def remote(self, *args):
            return self.function(*args)

        def map(self, batches, kwargs, return_exceptions):
            calls.append((len(batches), kwargs, return_exceptions))
            return [self.function(batch, **kwargs) for batch in batches]

    class Containers:
        binding = Method(worker.binding)
        embed = Method(lambda batch, collection: worker.embed(collection, batch))

    monkeypatch.setattr(modal_fanout, "FanoutEmbedder", Containers)
    monkeypatch.setattr(modal_fanout, "DOCUMENTS_DIR", str(tmp_path / "documents"))
    monkeypatch.setattr(modal_fanout.documents_volume, "reload", lambda: None)
    monkeypatch.setattr(fanout, "qdrant_client", lambda settings: qdrant)
    try:
        report = modal_fanout.coordinate.local("reports", "run1", ["00000/a.pdf", "00001/b.png"], 2, {"by": "modal"}, 1)
        assert len(report["completed"]) == 2 and report["failed"] == {} and report["pages_written"] == 4
        assert calls == [(3, {"collection": "reports"}, True)], "2 + 1 batches of the PDF, 1 of the image"
        reopened = QdrantClient(path=str(tmp_path / "qdrant"))  # coordinate closed its client
        points, _ = reopened.scroll("pagelens_reports", limit=10)
        assert sorted((p.payload["name"], p.payload["page"], p.payload["status"]) for p in points) == [
            ("a.pdf", 1, "complete"),
            ("a.pdf", 2, "complete"),
            ("a.pdf", 3, "complete"),
            ("b.png", 1, "complete"),
        ]
        assert {p.payload["metadata"]["by"] for p in points} == {"modal"}
        reopened.close()
    finally:
        runtime.close()
