"""The page-store backends the store tests run against: Qdrant Edge, qdrant-client's local mode (on
disk, so a reopen sees what an earlier process wrote), and a real Qdrant server when
PAGELENS_TEST_QDRANT_URL names one (PAGELENS_TEST_QDRANT_API_KEY if it needs a key).

`open_store` is importable from a child process too (the SIGKILL test opens stores there)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BACKENDS = ("edge", "qdrant-local", "qdrant-server")
SERVER_URL = os.environ.get("PAGELENS_TEST_QDRANT_URL")
SERVER_SKIP = "set PAGELENS_TEST_QDRANT_URL to a Qdrant server (none can be installed on this machine)"
OWNER = "tests"


def backend_params() -> list:
    """pytest params for BACKENDS; the real-server one is skipped when no server is configured."""
    return [
        pytest.param(kind, marks=pytest.mark.skipif(not SERVER_URL, reason=SERVER_SKIP))
        if kind == "qdrant-server"
        else kind
        for kind in BACKENDS
    ]


def server_client():
    from qdrant_client import QdrantClient

    return QdrantClient(url=SERVER_URL, api_key=os.environ.get("PAGELENS_TEST_QDRANT_API_KEY"))


def open_store(kind: str, directory: str | Path, collection: str, schema=None):
    """Open (creating with `schema` if missing; None: the stored one, else MULTI_VECTOR_128) the
    store of `kind`: Edge under `directory`, local mode with its files in `directory`, or
    `collection` on the test server."""
    from qdrant_client import QdrantClient

    from pagelens.index.edge_store import open_edge_store
    from pagelens.index.qdrant_store import QdrantPageStore

    if kind == "edge":
        return open_edge_store(directory, schema=schema)
    client = QdrantClient(path=str(directory)) if kind == "qdrant-local" else server_client()
    try:
        return QdrantPageStore(client, collection, owner=OWNER, schema=schema)
    except BaseException:
        client.close()  # local mode locks its directory until the client closes
        raise


def close_store(store, *, drop: bool = False) -> None:
    """Close a store from `open_store` (and its client); `drop` deletes a server collection."""
    store.close()
    client = getattr(store, "client", None)
    if client is not None:
        if drop:
            client.delete_collection(store.collection)
        client.close()
