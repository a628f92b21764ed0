"""Slow clients against a real uvicorn: a request body that stops arriving is a 408 that closes the
connection; a slow body that keeps arriving is served; `pagelens serve` sets uvicorn's timeouts."""

from __future__ import annotations

import json
import socket
import time

import pytest
from typer.testing import CliRunner

from pagelens.api import create_app
from pagelens.cli import app as cli
from pagelens.settings import Settings
from pagelens.testing.servers import uvicorn_in_thread
from tests.api.conftest import API_KEY, fake_runtime

TIMEOUT = 0.5


@pytest.fixture(scope="module")
def server_address():
    settings = Settings(model="fake/model", api_key=API_KEY, body_timeout_seconds=TIMEOUT)
    runtime = fake_runtime(settings=settings)
    with uvicorn_in_thread(create_app(runtime=runtime)) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)
    runtime.close()


def request_head(length: int) -> bytes:
    return (
        f"POST /embeddings HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def read_until_closed(sock: socket.socket, limit: float = 10.0) -> bytes:
    sock.settimeout(limit)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_body_that_stops_arriving_is_a_408_and_the_connection_closes(server_address):
    body = json.dumps({"input_type": "text", "inputs": ["q"]}).encode()
    with socket.create_connection(server_address) as sock:
        started = time.monotonic()
        sock.sendall(request_head(len(body)) + body[:10])
        response = read_until_closed(sock)  # returns only once the server closed the connection
        waited = time.monotonic() - started
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"connection: close" in head.lower()
    error = json.loads(payload)["error"]
    assert error["type"] == "request_timeout" and f"{TIMEOUT:g} s" in error["message"]
    assert TIMEOUT <= waited < TIMEOUT + 5


def test_a_slow_body_that_keeps_arriving_is_served(server_address):
    body = json.dumps({"input_type": "text", "inputs": ["q"]}).encode()
    pieces = [body[i : i + 8] for i in range(0, len(body), 8)]
    with socket.create_connection(server_address) as sock:
        sock.sendall(request_head(len(body)))
        for piece in pieces:  # longer than the timeout in all, never idle that long
            time.sleep(TIMEOUT / 4)
            sock.sendall(piece)
        assert len(pieces) * TIMEOUT / 4 > TIMEOUT
        sock.settimeout(10)
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]


def test_serve_sets_uvicorns_timeouts(monkeypatch):
    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: started.append(options))
    monkeypatch.setenv("PAGELENS_SHUTDOWN_TIMEOUT_SECONDS", "12")
    monkeypatch.setenv("PAGELENS_HEADER_TIMEOUT_SECONDS", "3")
    result = CliRunner().invoke(cli, ["serve", "--model", "some/model", "--api-key", "k"])
    assert result.exit_code == 0, result.output
    assert (started[0]["timeout_keep_alive"], started[0]["timeout_graceful_shutdown"]) == (5, 12)
    assert started[0]["http"].header_timeout == 3


def test_headers_that_trickle_in_past_the_limit_lose_their_connection():
    """uvicorn alone keeps such a connection open forever (a slowloris); pagelens' protocol closes it."""
    from pagelens.api.server import uvicorn_options

    settings = Settings(model="fake/model", api_key=API_KEY, header_timeout_seconds=TIMEOUT)
    runtime = fake_runtime(settings=settings)
    options = {key: value for key, value in uvicorn_options(settings).items() if key not in ("host", "port")}
    try:
        with uvicorn_in_thread(create_app(runtime=runtime), **options) as url:
            host, port = url.removeprefix("http://").split(":")
            started = time.monotonic()  # before the server's clock for this connection starts
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\n")
                closed_after = None
                for _ in range(20):  # a header line now and then, never the end of the headers
                    try:
                        sock.sendall(b"X-Slow: 1\r\n")
                    except OSError:
                        closed_after = time.monotonic() - started
                        break
                    sock.settimeout(0.2)
                    try:
                        if sock.recv(1024) == b"":
                            closed_after = time.monotonic() - started
                            break
                    except TimeoutError:
                        pass
            # the server's clock starts at its accept: a few ms of scheduling either way are no early close
            assert closed_after is not None and TIMEOUT - 0.05 <= closed_after < TIMEOUT + 3, closed_after
            with socket.create_connection((host, int(port))) as sock:  # a prompt request is served as always
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                assert read_until_closed(sock).startswith(b"HTTP/1.1 200")
    finally:
        runtime.close()
