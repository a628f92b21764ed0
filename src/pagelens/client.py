"""A Python client for a pagelens server, well-behaved under load.

    from pagelens.client import Client
    with Client("http://127.0.0.1:8000", api_key="...") as client:
        pages = client.embed_images([png_bytes, pil_image])      # [(n_tokens, 128) float32, ...]
        queries = client.embed_queries(["what is the revenue?"])
        scores = client.score("what is the revenue?", embeddings=pages)
        client.create_collection("reports")
        client.add_document("reports", pdf_bytes, filename="q3.pdf", metadata={"year": 2023})
        hits = client.search("reports", "what is the revenue?", k=5, filter={"year": {"$gte": 2020}})
        answer = client.ask("reports", "what is the revenue?", k=3)   # {"answer", "sources", "timings", ...}
        for event, data in client.ask("reports", "what is the revenue?", stream=True):
            print(data["text"], end="") if event == "token" else None   # sources, token ..., done
        maps = client.heatmap("reports", hits[0]["document_id"], hits[0]["page"], "what is the revenue?")
        client.patch_document("reports", hits[0]["document_id"], {"reviewed": True})
        client.export_collection("reports", "reports.tar")          # a snapshot archive, streamed to disk
        client.import_collection("reports.tar", name="reports-copy")

        job = client.add_document("reports", big_pdf, filename="annual.pdf", wait=False)   # 202: queued
        for event, state in client.job_events(job["id"]):    # progress ..., then done | failed | cancelled
            print(event, state["pages_done"], "/", state["pages_total"])

It speaks the morphik-core route (`/embeddings`, npz bodies). 429 and 503 are retried after the
server's Retry-After (capped); 413 splits the batch in halves and retries each half, as morphik-core
does. Every other error is raised at once as the class in pagelens.errors whose `error_type` the
response names (409 `model_mismatch` is ModelMismatch, 415 UnsupportedMediaType, ...), with the
server's message and input index.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
from PIL import Image

from pagelens import errors
from pagelens.client_responses import error_from_response, job_error, retry_after, server_sent_events, typed_error
from pagelens.codecs.outputs import NPZ_MEDIA, decode_npz

__all__ = ["Client", "error_from_response", "job_error"]

_RETRYABLE = (429, 503)
EVENT_READ_TIMEOUT = 60.0  # a job's event stream sends a heartbeat every 15 s; silence this long means it is gone


def _image_to_base64(image: bytes | Image.Image) -> str:
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        image = buffer.getvalue()
    return base64.b64encode(image).decode("ascii")


class Client:
    """Synchronous client. `max_retries` bounds retries of 429/503/connection errors per request;
    each wait is the server's Retry-After, capped at `max_retry_wait` seconds. `timeout`: seconds to
    wait for each answer, None for no limit (an upload that waits for a long ingest: a 500-page PDF
    takes many minutes on a CPU); connecting gives up after `connect_timeout` either way."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float | None = 300.0,
        connect_timeout: float = 30.0,
        max_retries: int = 5,
        max_retry_wait: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if timeout is not None:
            connect_timeout = min(connect_timeout, timeout)
        self._connect_timeout = connect_timeout
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
        )  # fmt: skip
        self.url = str(self._http.base_url).rstrip("/")
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.retries = 0  # how many retries this client has made (observability, tests)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---------------------------------------------------------------- requests
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt >= self.max_retries:
                    raise
                wait = min(self.max_retry_wait, 0.5 * 2**attempt)
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in _RETRYABLE or attempt >= self.max_retries:
                    raise error_from_response(response)
                wait = min(self.max_retry_wait, retry_after(response, 1.0))
            attempt += 1
            self.retries += 1
            time.sleep(wait)

    def _embed(self, input_type: str, inputs: list[str], dtype: str, offset: int = 0) -> list[np.ndarray]:
        if not inputs:
            return []
        try:
            response = self._request(
                "POST", "/embeddings", params={"dtype": dtype}, headers={"Accept": NPZ_MEDIA},
                json={"input_type": input_type, "inputs": inputs},
            )  # fmt: skip
        except errors.PayloadTooLarge:
            if len(inputs) == 1:
                raise
            middle = len(inputs) // 2
            return self._embed(input_type, inputs[:middle], dtype, offset) + self._embed(
                input_type, inputs[middle:], dtype, offset + middle
            )
        except errors.PagelensError as error:
            if error.index is not None:
                raise error.with_index(error.index + offset) from None
            raise
        _, arrays = decode_npz(response.content)
        return arrays

    def embed_images(self, images: Sequence[bytes | Image.Image], *, dtype: str = "float32") -> list[np.ndarray]:
        """Embed page images (encoded bytes or PIL images): one `(n_tokens, dim)` array each, in order."""
        return self._embed("image", [_image_to_base64(image) for image in images], dtype)

    def embed_queries(self, texts: Sequence[str], *, dtype: str = "float32") -> list[np.ndarray]:
        """Embed query texts: one array each, in order."""
        return self._embed("text", list(texts), dtype)

    def score(
        self,
        query: str,
        *,
        images: Sequence[bytes | Image.Image] | None = None,
        embeddings: Sequence[np.ndarray] | None = None,
    ) -> list[float]:
        """Server-side MaxSim of `query` against page images or page embeddings."""
        body: dict[str, Any] = {"query": query}
        if images is not None:
            body["images"] = [_image_to_base64(image) for image in images]
        if embeddings is not None:
            body["embeddings"] = [np.asarray(e, dtype=np.float32).tolist() for e in embeddings]
        return self._request("POST", "/score", json=body).json()["scores"]

    # ---------------------------------------------------------------- collections
    def create_collection(self, name: str) -> dict:
        return self._request("POST", "/collections", json={"name": name}).json()

    def collections(self) -> list[dict]:
        return self._request("GET", "/collections").json()["collections"]

    def collection(self, name: str) -> dict:
        """`{"name", "documents", "pages", "model", "compatible", "mismatch", "recovered"}`."""
        return self._request("GET", f"/collections/{name}").json()

    def delete_collection(self, name: str) -> None:
        self._request("DELETE", f"/collections/{name}")

    def add_document(
        self,
        collection: str,
        data: bytes,
        *,
        filename: str = "document",
        metadata: dict | None = None,
        password: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Upload a PDF, image or office document (an encrypted PDF with its `password`); returns
        `{"id", "pages", "created", "metadata_kept"}` once it is stored (re-uploading the same bytes
        stores nothing and keeps the stored metadata: `patch_document` changes it). With `wait=False`
        the server answers at once with the queued ingest job (`{"id", "state", "pages_done",
        "pages_total", "document_id", ...}`; follow it with `job` or `job_events`), which survives a
        restart of the server. A waiting upload is answered when the ingest ends: give the client
        `timeout=None` for long documents."""
        form = {"metadata": json.dumps(metadata)} if metadata is not None else {}
        if password is not None:
            form["password"] = password
        files = {"file": (filename, data, "application/octet-stream")}
        params = None if wait else {"wait": "false"}
        path = f"/collections/{collection}/documents"
        return self._request("POST", path, files=files, data=form or None, params=params).json()

    def documents(self, collection: str) -> list[dict]:
        return self._request("GET", f"/collections/{collection}/documents").json()["documents"]

    def document(self, collection: str, document_id: str) -> dict:
        """`{"id", "name", "pages", "bytes", "sha256", "metadata", "created_at", "kind", "dpi"}`."""
        return self._request("GET", f"/collections/{collection}/documents/{document_id}").json()

    def patch_document(self, collection: str, document_id: str, metadata: dict) -> dict:
        """Merge `metadata` into the document's (a `None` value deletes that key); returns the document."""
        path = f"/collections/{collection}/documents/{document_id}"
        return self._request("PATCH", path, json={"metadata": metadata}).json()

    def document_file(self, collection: str, document_id: str) -> bytes:
        """The document's file, as uploaded."""
        return self._request("GET", f"/collections/{collection}/documents/{document_id}/file").content

    def delete_document(self, collection: str, document_id: str) -> None:
        self._request("DELETE", f"/collections/{collection}/documents/{document_id}")

    def page_image(self, collection: str, document_id: str, page: int) -> Image.Image:
        return Image.open(io.BytesIO(self.page_png(collection, document_id, page)))

    def page_png(self, collection: str, document_id: str, page: int, *, full: bool = False) -> bytes:
        """Page `page` (1-based) as PNG bytes; over 4 megapixels it comes downscaled unless `full`."""
        path = f"/collections/{collection}/documents/{document_id}/pages/{page}"
        return self._request("GET", path, params={"full": "true"} if full else None).content

    def search(
        self,
        collection: str,
        query: str,
        *,
        k: int = 10,
        mode: str = "exact",
        filter: dict | None = None,
        prefetch: int | None = None,
    ) -> list[dict]:
        """Top-k pages: `[{"document_id", "page", "score", "name", "metadata"}, ...]`. `filter`: metadata
        field -> value or operators (`$in`, `$gt`, `$gte`, `$lt`, `$lte`), ANDed. `prefetch`: the candidate
        pages `fast` mode rescores (1..10000, at least k are; None: the server's default)."""
        body = {"query": query, "k": k, "mode": mode, "filter": filter}
        if prefetch is not None:
            body["prefetch"] = prefetch
        return self._request("POST", f"/collections/{collection}/search", json=body).json()["results"]

    # ---------------------------------------------------------------- answers
    def ask(
        self,
        collection: str,
        question: str,
        *,
        k: int = 3,
        mode: str = "exact",
        filter: dict | None = None,
        prefetch: int | None = None,
        max_tokens: int = 512,
        stream: bool = False,
    ) -> Any:
        """An answer from the server's answer model over the `k` pages `search` finds for `question`
        (same `mode`, `filter`, `prefetch`): `{"answer", "sources": [{document_id, page, score, name,
        metadata}], "model", "usage", "timings", "cached", "finish_reason"}`; `[n]` in the answer cites
        `sources[n-1]`. With `stream=True`, an iterator of `(event, data)`: `("sources", {"sources"})`,
        `("token", {"text"})` per piece, then `("done", {timings, usage, model, cached, finish_reason})`;
        a failure of the answer model mid-stream is raised as its typed error (GeneratorFailed,
        GeneratorTimeout, ...). Leaving the iterator early closes the stream, which stops the
        generation on the server. Errors before an answer starts (NotFound, InvalidInput,
        GeneratorNotConfigured, ...) are raised either way. Not retried."""
        body: dict[str, Any] = {"question": question, "k": k, "mode": mode, "filter": filter,
                                "max_tokens": max_tokens, "stream": stream}  # fmt: skip
        if prefetch is not None:
            body["prefetch"] = prefetch
        path = f"/collections/{quote(collection, safe='')}/ask"
        if not stream:
            response = self._http.post(path, json=body)
            if response.status_code >= 400:
                raise error_from_response(response)
            return response.json()
        return self._ask_events(path, body)

    def _ask_events(self, path: str, body: dict[str, Any]) -> Iterator[tuple[str, dict]]:
        with self._http.stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                response.read()
                raise error_from_response(response)
            for event, data in server_sent_events(response.iter_lines()):
                if event == "error":
                    detail = data.get("error") or {}
                    raise typed_error(detail.get("type"), detail.get("message", ""), status=502)
                yield event, data

    def heatmap(self, collection: str, document_id: str, page: int, query: str) -> dict:
        """colpali-engine's similarity maps of a stored page for `query`: `{"tokens", "token_rows",
        "grid": [h, w], "maps": per token h x w raw dot products (maps[t][y][x]), "combined",
        "value_range", "score", ...}`. NoSimilarityMap (409) when the page has none (single-vector or
        pooled collections, pages stored before patch grids were recorded: re-ingest them)."""
        path = f"/collections/{collection}/documents/{document_id}/pages/{page}/heatmap"
        return self._request("POST", path, json={"query": query}).json()

    def heatmap_png(
        self, collection: str, document_id: str, page: int, query: str, *, token: int | None = None
    ) -> bytes:
        """The page image with the combined map (or token `token`'s, an index into `heatmap`'s
        tokens) blended over it in red, as PNG bytes."""
        path = f"/collections/{collection}/documents/{document_id}/pages/{page}/heatmap"
        params: dict[str, Any] = {"format": "png"} | ({"token": token} if token is not None else {})
        return self._request("POST", path, params=params, json={"query": query}).content

    # ---------------------------------------------------------------- snapshots
    def export_collection(self, name: str, path: str | Path) -> Path:
        """Download collection `name` as a snapshot archive (a tar: manifest, records, files, stored
        vectors and the model binding) to `path`, streamed to disk; returns `path`. The file appears
        only once the whole archive has arrived (a failed download leaves none, and an earlier
        file at `path` as it was). NotFound (404) for an unknown collection; BackendFailure when the
        download ends early. Not retried: call again."""
        path = Path(path)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with (
                os.fdopen(descriptor, "wb") as file,
                self._http.stream("GET", f"/collections/{name}/export") as response,
            ):
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                try:
                    for chunk in response.iter_bytes(1 << 20):
                        file.write(chunk)
                except httpx.TransportError as error:  # the server failed mid-way, or the connection dropped
                    raise errors.BackendFailure(
                        f"the export of {name!r} ended before the archive was complete ({error}); see the server's log"
                    ) from error
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    def import_collection(self, path: str | Path, name: str | None = None) -> dict:
        """Create a collection from the snapshot archive at `path` (streamed from disk), named `name`
        or, when None, as the archive says. Returns its summary: `{"name", "documents", "pages",
        "model", "compatible", "mismatch"}`. Raises Conflict (409) when the name is taken,
        UnprocessableDocument (422) for a bad archive, PayloadTooLarge (413) over the server's
        PAGELENS_MAX_DOCUMENT_BYTES; nothing is created then. The answer is awaited however long the
        import takes (~25 ms a multi-vector page on 2 CPU cores). Not retried: call again."""
        params = {"name": name} if name is not None else None
        waiting = self._http.timeout.as_dict() | {"read": None}  # the answer comes once every page is stored
        with open(path, "rb") as file:
            response = self._http.post(
                "/collections/import", params=params, content=file, headers={"Content-Type": "application/x-tar"},
                timeout=httpx.Timeout(**waiting),
            )  # fmt: skip
        if response.status_code >= 400:
            raise error_from_response(response)
        return response.json()

    # ---------------------------------------------------------------- ingest jobs
    def jobs(self, collection: str | None = None, state: str | None = None) -> list[dict]:
        """The server's ingest jobs, oldest first, optionally of one collection or in one state
        (`queued`, `running`, `done`, `failed`, `cancelled`)."""
        params = {key: value for key, value in (("collection", collection), ("state", state)) if value is not None}
        return self._request("GET", "/jobs", params=params).json()["jobs"]

    def job(self, job_id: str) -> dict:
        """`{"id", "collection", "filename", "document_id", "state", "pages_done", "pages_total",
        "created", "error", "created_at", "finished_at"}`."""
        return self._request("GET", f"/jobs/{quote(job_id, safe='')}").json()

    def cancel_job(self, job_id: str) -> dict:
        """Cancel a queued or running job (nothing of its document stays); `Conflict` once it has ended."""
        return self._request("DELETE", f"/jobs/{quote(job_id, safe='')}").json()

    def job_events(self, job_id: str) -> Iterator[tuple[str, dict]]:
        """The job's server-sent events as `(event, job)`: `progress` whenever it changes, then one
        named after its final state (`done`, `failed`, `cancelled`), and the iterator ends. No time
        limit on the whole; a stream silent for EVENT_READ_TIMEOUT seconds fails (the server sends a
        heartbeat every 15 s). Not retried."""
        timeout = httpx.Timeout(EVENT_READ_TIMEOUT, connect=self._connect_timeout)
        with self._http.stream("GET", f"/jobs/{quote(job_id, safe='')}/events", timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise error_from_response(response)
            yield from server_sent_events(response.iter_lines())

    # ---------------------------------------------------------------- server
    def health(self) -> dict:
        response = self._http.get("/health")
        if response.status_code != 200:
            raise error_from_response(response)
        return response.json()

    def info(self) -> dict:
        return self._request("GET", "/").json()
