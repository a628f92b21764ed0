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

    settings = Settings(model="fake/model", api_key="k")
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


MODAL_FIELDS = ("app", "gpu", "model", "scaledown", "min_containers", "max_containers", "timeout", "concurrency",
                "gpu_snapshot", "hf_secret", "key_secret")  # fmt: skip


def test_deploy_settings_defaults_and_overrides(monkeypatch):
    from pagelens.deploy.modal_settings import ModalSettings
    from pagelens.settings import DEFAULT_MODEL

    for field in MODAL_FIELDS:
        monkeypatch.delenv(f"PAGELENS_MODAL_{field.upper()}", raising=False)
    defaults = ModalSettings()
    assert [getattr(defaults, field) for field in MODAL_FIELDS] == [
        "pagelens", "L40S", DEFAULT_MODEL, 300, 0, 5, 600, 32, True, "huggingface-secret", "pagelens-api-key",
    ]  # fmt: skip
    overrides = {"app": "pl-staging", "gpu": "A10G", "model": "vidore/colqwen2.5-v0.2", "scaledown": "60",
                 "min_containers": "1", "max_containers": "2", "timeout": "30", "concurrency": "4",
                 "gpu_snapshot": "0", "hf_secret": "hf", "key_secret": "key"}  # fmt: skip
    for field, value in overrides.items():
        monkeypatch.setenv(f"PAGELENS_MODAL_{field.upper()}", value)
    changed = ModalSettings()
    assert [getattr(changed, field) for field in MODAL_FIELDS] == [
        "pl-staging", "A10G", "vidore/colqwen2.5-v0.2", 60, 1, 2, 30, 4, False, "hf", "key",
    ]  # fmt: skip
    monkeypatch.setenv("PAGELENS_MODAL_GPU_SNAPSHOT", "")
    monkeypatch.setenv("PAGELENS_MODAL_CONCURRENCY", "")
    assert (ModalSettings().gpu_snapshot, ModalSettings().concurrency) == (True, 32), "empty means unset"


def test_deploy_settings_import_without_modal(monkeypatch):
    import importlib

    monkeypatch.setitem(sys.modules, "modal", None)  # `import modal` now raises ImportError
    monkeypatch.delitem(sys.modules, "pagelens.deploy.modal_settings", raising=False)
    assert importlib.import_module("pagelens.deploy.modal_settings").ModalSettings().app


def test_the_modal_app_takes_its_deploy_settings_from_the_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "PAGELENS_MODAL_"))}
    deploy = {"APP": "pl-staging", "CONCURRENCY": "4", "GPU": "A10G", "MODEL": "org/model", "TIMEOUT": ""}
    env |= {"HOME": str(tmp_path)} | {f"PAGELENS_MODAL_{name}": value for name, value in deploy.items()}
    code = "import pagelens.deploy.modal_app as m; print(m.app.name, m.CONCURRENCY, m.GPU, m.MODEL, m.TIMEOUT)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["pl-staging", "4", "A10G", "org/model", "600"]
    without_snapshots = env | {"PAGELENS_MODAL_GPU_SNAPSHOT": "0"}  # the model then loads in a plain enter hook
    result = subprocess.run([sys.executable, "-c", code], env=without_snapshots, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_image_carries_the_web_page_files_but_no_bytecode():
    from modal.file_pattern_matcher import FilePatternMatcher

    from pagelens.api.ui import STATIC_DIR
    from pagelens.deploy.modal_app import SOURCE_IGNORE

    ignored = FilePatternMatcher(*SOURCE_IGNORE)
    package = STATIC_DIR.parents[2]  # src/pagelens
    shipped = [path.relative_to(package.parent) for path in STATIC_DIR.rglob("*") if path.is_file()]
    assert len(shipped) >= 10 and not any(ignored(path) for path in shipped)
    assert ignored(package.relative_to(package.parent) / "api" / "__pycache__" / "app.cpython-311.pyc")
