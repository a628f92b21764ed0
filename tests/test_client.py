"""The Python client against real HTTP servers: round trips, 413 splitting, Retry-After retries,
and typed errors that are never retried."""

from __future__ import annotations

import io
import json
import threading

import httpx
import numpy as np
import pytest

from pagelens import errors
from pagelens.api import create_app
from pagelens.client import Client, error_from_response, job_error
from pagelens.codecs.outputs import encode_npz
from pagelens.engine import EngineConfig
from pagelens.errors import InvalidInput, Overloaded, Unauthorized
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend, embed_alone
from pagelens.testing.servers import uvicorn_in_thread
from tests.api.conftest import fake_runtime
from tests.api.server import REAL_KEY
from tests.conftest import encode, make_page


@pytest.fixture
def fake_server():
    """A real uvicorn server over the fake backend, at most 2 inputs per request."""
    backend = FakeBackend()
    service = fake_runtime(backend, settings=Settings(model="fake", api_key="k"), max_inputs_per_request=2)
    with uvicorn_in_thread(create_app(runtime=service)) as url:
        yield url, backend
    service.engine.close()


def test_round_trip_against_the_real_model_server(server):
    pages = [make_page(300, 400, 1), make_page(200, 120, 2)]
    with Client(server, api_key=REAL_KEY) as client:
        vectors = client.embed_images([encode(pages[0]), pages[1]])
        queries = client.embed_queries(["revenue by quarter"])
        scores = client.score("revenue by quarter", embeddings=vectors)
        assert client.health()["status"] == "ok" and client.info()["model"]["family"] == "colqwen2_5"
    raw = httpx.post(
        f"{server}/embeddings",
        json={"input_type": "text", "inputs": ["revenue by quarter"]},
        headers={"Authorization": f"Bearer {REAL_KEY}"},
    )
    np.testing.assert_array_equal(queries[0], np.load(io.BytesIO(raw.content))["emb_0"])
    assert [v.shape[1] for v in vectors] == [128, 128] and vectors[0].shape[0] != vectors[1].shape[0]
    expected = [float((queries[0] @ v.T).max(axis=1).sum()) for v in vectors]
    np.testing.assert_allclose(scores, expected, rtol=1e-4)


def test_413_splits_the_batch_and_keeps_order(fake_server):
    url, backend = fake_server
    texts = [f"query number {i}" for i in range(5)]
    with Client(url, api_key="k") as client:
        results = client.embed_queries(texts)
    assert len(results) == 5
    for text, got in zip(texts, results, strict=True):
        np.testing.assert_array_equal(got, embed_alone(backend, "query", text))


def test_a_400_is_raised_with_the_callers_index_and_never_retried(fake_server):
    url, _ = fake_server
    images = [encode(make_page(50, 50, i)) for i in range(5)]
    images[3] = b"%PDF-1.4 definitely not an image"
    with Client(url, api_key="k") as client:
        with pytest.raises(InvalidInput) as raised:
            client.embed_images(images)
        assert raised.value.index == 3 and "PDF" in raised.value.message
        assert client.retries == 0
    with Client(url, api_key="wrong") as client, pytest.raises(Unauthorized):
        client.embed_queries(["x"])
    assert client.retries == 0


def test_429_is_retried_after_retry_after_until_it_succeeds():
    release = threading.Event()
    backend = FakeBackend(on_forward=lambda batch: release.wait(10))
    config = EngineConfig(max_queued_items=1, max_batch_queries=1, max_wait_ms=0)
    service = fake_runtime(backend, config, settings=Settings(model="fake", api_key=None, no_auth=True))
    with uvicorn_in_thread(create_app(runtime=service)) as url:
        blocker = service.engine.submit_queries(["fills the queue"])
        threading.Timer(0.5, release.set).start()
        with Client(url, max_retry_wait=2) as client:
            (result,) = client.embed_queries(["patient query"])
            assert client.retries >= 1
        blocker[0].result(5)
        np.testing.assert_array_equal(result, embed_alone(backend, "query", "patient query"))
        release.clear()
        service.engine.submit_queries(["fills the queue again"])
        with Client(url, max_retries=1, max_retry_wait=0.1) as client, pytest.raises(Overloaded):
            client.embed_queries(["gives up"])
        release.set()
    service.engine.close()


def test_collections_and_search_through_the_client(tmp_path):
    from pagelens.errors import NotFound
    from tests.index.test_pdf import make_pdf

    backend = FakeBackend(dim=128)
    settings = Settings(model="fake", api_key="k", data_dir=str(tmp_path / "data"), pdf_dpi=72)
    service = fake_runtime(backend, settings=settings)
    with uvicorn_in_thread(create_app(runtime=service)) as url, Client(url, api_key="k") as client:
        assert client.create_collection("docs")["name"] == "docs"
        added = client.add_document("docs", make_pdf(3), filename="a.pdf", metadata={"team": "finance"})
        assert added["pages"] == 3 and added["created"]
        assert client.add_document("docs", make_pdf(3), filename="a.pdf")["created"] is False
        hits = client.search("docs", "budget table", k=2, filter={"team": "finance"})
        assert len(hits) == 2 and hits[0]["document_id"] == added["id"]
        fast = client.search("docs", "budget table", k=2, mode="fast", prefetch=3)
        assert [(h["page"], h["score"]) for h in fast] == [(h["page"], h["score"]) for h in hits]
        with pytest.raises(InvalidInput, match="prefetch"):
            client.search("docs", "budget table", mode="fast", prefetch=0)
        assert client.page_image("docs", added["id"], 2).size == (210, 300)
        assert [c["pages"] for c in client.collections()] == [3]
        client.delete_document("docs", added["id"])
        assert client.documents("docs") == []
        client.delete_collection("docs")
        with pytest.raises(NotFound):
            client.search("docs", "anything")
    service.engine.close()


def test_documents_and_filters_through_the_client(tmp_path):
    import hashlib

    from pagelens.errors import NotFound
    from tests.index.test_pdf import make_pdf

    settings = Settings(model="fake", api_key="k", data_dir=str(tmp_path / "data"), pdf_dpi=72)
    service = fake_runtime(FakeBackend(dim=128), settings=settings)
    pdf = make_pdf(2)
    with uvicorn_in_thread(create_app(runtime=service)) as url, Client(url, api_key="k") as client:
        client.create_collection("docs")
        added = client.add_document("docs", pdf, filename="a.pdf", metadata={"team": "x", "year": 2020})
        assert added["metadata_kept"] is False
        document = client.document("docs", added["id"])
        assert document["sha256"] == hashlib.sha256(pdf).hexdigest() and document["bytes"] == len(pdf)
        assert client.document_file("docs", added["id"]) == pdf
        patched = client.patch_document("docs", added["id"], {"year": None, "since": "2024-05-01"})
        assert patched["metadata"] == {"team": "x", "since": "2024-05-01"}
        assert client.document("docs", added["id"]) == patched
        again = client.add_document("docs", pdf, filename="a.pdf", metadata={"team": "y"})
        assert again["created"] is False and again["metadata_kept"] is True
        hits = client.search("docs", "q", filter={"team": {"$in": ["x", "z"]}, "since": {"$gte": "2024-01-01"}})
        assert sorted(hit["page"] for hit in hits) == [1, 2]
        assert client.search("docs", "q", filter={"since": {"$lt": "2024-05-01"}}) == []
        with pytest.raises(InvalidInput, match=r"filter.since.\$lt: '05/01/2024' is not an ISO 8601 date"):
            client.search("docs", "q", filter={"since": {"$lt": "05/01/2024"}})
        with pytest.raises(InvalidInput, match="metadata: Input should be a valid dictionary"):
            client.patch_document("docs", added["id"], ["not", "an", "object"])  # type: ignore[arg-type]
        client.delete_document("docs", added["id"])
        for call in (client.document, client.document_file):
            with pytest.raises(NotFound):
                call("docs", added["id"])
    service.engine.close()


# ---------------------------------------------------------------- error mapping (no server: MockTransport)


def error_body(cls: type[errors.PagelensError], index: int | None = 2) -> dict:
    body = {"type": cls.error_type, "message": f"server says {cls.__name__}"}
    return {"error": body if index is None else {**body, "index": index}}


def mock_client(handler, **options) -> Client:
    """A client whose requests go to `handler(request) -> httpx.Response`; no sleeping between retries."""
    return Client("http://pagelens.test", transport=httpx.MockTransport(handler), max_retry_wait=0, **options)


@pytest.mark.parametrize("cls", errors.error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_type_raises_its_class_with_the_servers_message_and_index(cls):
    response = httpx.Response(cls.http_status, json=error_body(cls))
    with mock_client(lambda request: response, max_retries=0) as client, pytest.raises(errors.PagelensError) as raised:
        client.info()
    assert type(raised.value) is cls
    assert raised.value.message == f"server says {cls.__name__}" and raised.value.index == 2
    assert raised.value.http_status == cls.http_status and raised.value.error_type == cls.error_type


@pytest.mark.parametrize(
    ("status", "cls", "call"),
    [
        (409, errors.Conflict, lambda client: client.create_collection("taken")),
        (409, errors.ModelMismatch, lambda client: client.search("other-model", "q")),
        (415, errors.UnsupportedMediaType, lambda client: client.add_document("c", b"PK zip")),
        (422, errors.UnprocessableDocument, lambda client: client.add_document("c", b"%PDF-1.7 broken")),
        (404, errors.NotFound, lambda client: client.documents("gone")),
        (500, errors.BackendFailure, lambda client: client.collections()),
        (400, errors.InvalidInput, lambda client: client.score("q", embeddings=[np.zeros((1, 4))])),
    ],
)
def test_errors_that_retrying_cannot_fix_are_raised_at_once(status, cls, call):
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(status, json=error_body(cls, index=None))

    with mock_client(handler) as client:
        with pytest.raises(cls, match=f"server says {cls.__name__}"):
            call(client)
        assert len(calls) == 1 and client.retries == 0


def test_a_body_without_a_known_type_keeps_the_status_and_type():
    unknown = httpx.Response(418, json={"error": {"type": "teapot", "message": "short and stout", "index": 1}})
    error = error_from_response(unknown)
    assert type(error) is errors.PagelensError and (error.http_status, error.error_type) == (418, "teapot")
    assert (error.message, error.index) == ("short and stout", 1)
    proxy = error_from_response(httpx.Response(502, text="<html>Bad Gateway</html>"))
    assert (proxy.http_status, proxy.error_type) == (502, "http_error") and "Bad Gateway" in proxy.message


def test_503_and_429_are_retried_with_their_retry_after_then_raise_their_class():
    statuses = iter([503, 429, 200])

    def handler(request):
        status = next(statuses)
        if status == 200:
            return httpx.Response(200, json={"name": "pagelens"})
        cls = errors.ModelNotReady if status == 503 else errors.Overloaded
        return httpx.Response(status, json=error_body(cls, index=None), headers={"Retry-After": "3"})

    with mock_client(handler) as client:
        assert client.info() == {"name": "pagelens"} and client.retries == 2
    overloaded = httpx.Response(429, json=error_body(errors.Overloaded, index=None), headers={"Retry-After": "3"})
    with mock_client(lambda request: overloaded, max_retries=1) as client:
        with pytest.raises(Overloaded) as raised:
            client.info()
        assert client.retries == 1 and raised.value.retry_after == 3.0


def test_413_splits_the_batch_and_a_later_400_names_the_callers_index():
    sizes = []

    def handler(request):
        inputs = json.loads(request.content)["inputs"]
        sizes.append(len(inputs))
        if len(inputs) > 2:
            return httpx.Response(413, json=error_body(errors.PayloadTooLarge, index=None))
        if "bad" in inputs:
            return httpx.Response(400, json=error_body(errors.InvalidInput, index=inputs.index("bad")))
        return httpx.Response(200, content=encode_npz([np.zeros((1, 4), np.float32)] * len(inputs), input_type="text"))

    with mock_client(handler) as client:
        assert len(client.embed_queries(["a", "b", "c", "d", "e"])) == 5
        assert sizes == [5, 2, 3, 1, 2]
        with pytest.raises(InvalidInput) as raised:
            client.embed_queries(["a", "b", "c", "bad", "e"])
        assert raised.value.index == 3 and client.retries == 0


def test_conflict_unsupported_and_unprocessable_uploads_from_a_real_server(tmp_path):
    settings = Settings(model="fake", api_key="k", data_dir=str(tmp_path / "data"), pdf_dpi=72)
    service = fake_runtime(FakeBackend(dim=128), settings=settings)
    with uvicorn_in_thread(create_app(runtime=service)) as url, Client(url, api_key="k") as client:
        client.create_collection("docs")
        with pytest.raises(errors.Conflict) as taken:
            client.create_collection("docs")
        assert type(taken.value) is errors.Conflict and "docs" in taken.value.message
        with pytest.raises(errors.UnsupportedMediaType):
            client.add_document("docs", b"PK\x03\x04 zip", filename="a.zip")
        with pytest.raises(errors.UnprocessableDocument, match="corrupt"):
            client.add_document("docs", b"%PDF-1.7 broken", filename="a.pdf")
        with pytest.raises(errors.MethodNotAllowed):
            client._request("GET", "/embeddings")
        assert client.retries == 0
    service.engine.close()


def test_a_collection_exported_and_imported_through_the_client(tmp_path, monkeypatch):
    from pagelens.errors import Conflict, NotFound, UnprocessableDocument
    from tests.index.test_pdf import make_pdf

    settings = Settings(model="fake", api_key="k", data_dir=str(tmp_path / "data"), pdf_dpi=72)
    service = fake_runtime(FakeBackend(dim=128), settings=settings)
    archive = tmp_path / "docs.tar"
    with uvicorn_in_thread(create_app(runtime=service)) as url, Client(url, api_key="k") as client:
        client.create_collection("docs")
        added = client.add_document("docs", make_pdf(3), filename="a.pdf", metadata={"team": "finance"})
        client.add_document("docs", encode(make_page(150, 200, 4)), filename="b.png", metadata={"team": "legal"})
        assert client.export_collection("docs", archive) == archive and archive.stat().st_size > 0
        imported = client.import_collection(archive, name="copy")
        assert (imported["name"], imported["documents"], imported["pages"]) == ("copy", 2, 4)
        for query in ("budget table", "signatures"):
            assert client.search("copy", query) == client.search("docs", query)
        assert client.document_file("copy", added["id"]) == make_pdf(3)
        with pytest.raises(Conflict):
            client.import_collection(archive)  # as 'docs', which exists
        (tmp_path / "junk.tar").write_bytes(b"not an archive" * 100)
        with pytest.raises(UnprocessableDocument, match="not a tar archive"):
            client.import_collection(tmp_path / "junk.tar", name="junk")
        before = archive.read_bytes()
        with pytest.raises(NotFound):
            client.export_collection("nope", archive)
        assert archive.read_bytes() == before and [p.name for p in tmp_path.glob(".docs.tar*")] == []
        assert sorted(c["name"] for c in client.collections()) == ["copy", "docs"]

        from pagelens.index import snapshot

        def failing(*args):
            raise Conflict("a document was deleted during the export")

        monkeypatch.setattr(snapshot, "_export_document", failing)  # the stream ends after the manifest
        with pytest.raises(errors.BackendFailure, match="ended before the archive was complete"):
            client.export_collection("docs", tmp_path / "cut.tar")
        assert [p.name for p in tmp_path.iterdir() if "cut" in p.name] == [], "no partial archive is left"
    service.engine.close()


def test_a_queued_upload_is_followed_through_its_job_and_its_events(tmp_path):
    from tests.index.test_pdf import make_pdf

    settings = Settings(model="fake", api_key="k", data_dir=str(tmp_path / "data"), pdf_dpi=72)
    service = fake_runtime(FakeBackend(dim=128), settings=settings)
    with uvicorn_in_thread(create_app(runtime=service)) as url, Client(url, api_key="k", timeout=None) as client:
        client.create_collection("docs")
        queued = client.add_document("docs", make_pdf(3), filename="a.pdf", metadata={"team": "x"}, wait=False)
        assert queued["state"] in ("queued", "running", "done") and queued["pages_total"] == 3
        events = list(client.job_events(queued["id"]))
        assert events[-1][0] == "done" and all(name == "progress" for name, _ in events[:-1])
        assert events[-1][1]["pages_done"] == 3 and events[-1][1]["created"] is True
        job = client.job(queued["id"])
        assert (job["state"], job["document_id"]) == ("done", queued["document_id"])
        assert [j["id"] for j in client.jobs(collection="docs", state="done")] == [queued["id"]]
        assert client.jobs(collection="other") == []
        with pytest.raises(errors.Conflict, match="already ended"):
            client.cancel_job(queued["id"])
        with pytest.raises(errors.NotFound):
            list(client.job_events("0" * 32))
        assert client.collection("docs")["pages"] == 3
        assert client.page_png("docs", job["document_id"], 1, full=True).startswith(b"\x89PNG")
    service.engine.close()


def test_event_streams_are_parsed_with_comments_and_multi_line_data():
    stream = (
        b': still running\n\nevent: progress\ndata: {"state": "running",\ndata:  "pages_done": 1}\n\n'
        b'event: failed\ndata: {"state": "failed", "error": {"type": "unprocessable_document", '
        b'"message": "page 2 would not render"}}\n\n'
    )
    with mock_client(lambda request: httpx.Response(200, content=stream)) as client:
        events = list(client.job_events("j"))
    failed = {"state": "failed", "error": {"type": "unprocessable_document", "message": "page 2 would not render"}}
    assert events == [("progress", {"state": "running", "pages_done": 1}), ("failed", failed)]
    error = job_error(events[-1][1])
    assert type(error) is errors.UnprocessableDocument and error.message == "page 2 would not render"
