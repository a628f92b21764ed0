"""The Modal app imports with no credentials and no network, and serves exactly the routes of
`pagelens serve`."""

from __future__ import annotations

import os
import subprocess
import sys

from pagelens.api import create_app
from pagelens.settings import Settings
from tests.api.conftest import fake_runtime


def _routes(app) -> set[tuple[str, str]]:
    """(path, method) of every API operation, plus the docs pages."""
    operations = {(path, method.upper()) for path, item in app.openapi()["paths"].items() for method in item}
    pages = {(route.path, "GET") for route in app.routes if getattr(route, "path", None)}
    return operations | pages


def test_module_imports_without_modal_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["HOME"] = str(tmp_path)  # no ~/.modal.toml either
    code = "import pagelens.deploy.modal_app as m; print(m.app.name, sorted(m.Pagelens._get_partial_functions()))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["pagelens", "['load_model',", "'start_engine',", "'stop_engine',", "'web']"]


def test_its_asgi_app_has_exactly_the_routes_of_pagelens_serve():
    from pagelens.deploy import modal_app

    settings = Settings(model="fake/model")
    runtime = fake_runtime(settings=settings)
    container = modal_app.Pagelens._get_user_cls().__new__(modal_app.Pagelens._get_user_cls())
    container.runtime = runtime
    web = modal_app.Pagelens._get_partial_functions()["web"]._get_raw_f()
    served = web(container)
    expected = _routes(create_app(settings))
    assert _routes(served) == expected
    assert {("/embeddings", "POST"), ("/embed", "POST"), ("/v1/embeddings", "POST"), ("/score", "POST"),
            ("/health", "GET"), ("/metrics", "GET"), ("/", "GET"), ("/docs", "GET")} <= expected  # fmt: skip
    runtime.close()
