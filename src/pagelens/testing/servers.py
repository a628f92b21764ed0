"""Running the app on loopback for tests and benchmarks: a free port, and uvicorn in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def uvicorn_in_thread(app, *, start_timeout: float = 30.0, **options) -> Iterator[str]:
    """Serve an ASGI app with a real uvicorn server on a free loopback port, in a thread of this process;
    yield its base URL and stop it afterwards. `options` are more `uvicorn.Config` arguments."""
    import uvicorn

    port = free_port()
    config = {"log_level": "warning", **options, "host": "127.0.0.1", "port": port}
    server = uvicorn.Server(uvicorn.Config(app, **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
