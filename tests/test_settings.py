"""Settings: PAGELENS_* variables, the seeds' fallbacks, and the serve command's start-up checks."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from pagelens.cli import app
from pagelens.settings import DEFAULT_MODEL, Settings

SEED_VARIABLES = ("PAGELENS_MODEL", "COLPALI_MODEL_ID", "PAGELENS_API_KEY", "SERVICE_API_KEY", "CPU_THREADS")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in SEED_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_and_seed_fallbacks(monkeypatch):
    settings = Settings()
    assert settings.model == DEFAULT_MODEL == "ModernVBERT/colmodernvbert-merged"
    assert settings.api_key is None and settings.host == "127.0.0.1" and settings.max_body_bytes == 64 * 1024 * 1024
    monkeypatch.setenv("COLPALI_MODEL_ID", "seed/002-model")
    monkeypatch.setenv("SERVICE_API_KEY", "seed-001-key")
    monkeypatch.setenv("CPU_THREADS", "3")
    settings = Settings()
    assert (settings.model, settings.api_key, settings.threads) == ("seed/002-model", "seed-001-key", 3)
    monkeypatch.setenv("PAGELENS_MODEL", "ours/model")
    monkeypatch.setenv("PAGELENS_API_KEY", "our-key")
    monkeypatch.setenv("PAGELENS_MAX_QUEUED_ITEMS", "7")
    settings = Settings()
    assert (settings.model, settings.api_key) == ("ours/model", "our-key")
    assert settings.engine_overrides()["max_queued_items"] == 7
    assert Settings(model="flag/model").model == "flag/model"


def test_loopback_detection():
    assert Settings(host="127.0.0.1").loopback_only and Settings(host="localhost").loopback_only
    assert not Settings(host="0.0.0.0").loopback_only


def test_serving_without_a_key_on_a_public_address_warns_loudly(monkeypatch, caplog):
    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: started.append(kwargs))
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(app, ["serve", "--model", "some/model", "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert "NO API KEY" in caplog.text and started[0]["host"] == "0.0.0.0"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        CliRunner().invoke(app, ["serve", "--model", "some/model", "--host", "0.0.0.0", "--api-key", "k"])
        CliRunner().invoke(app, ["serve", "--model", "some/model"])
    assert "NO API KEY" not in caplog.text


@pytest.mark.filterwarnings("ignore:Failed to obtain server version", "ignore:Api key is used with an insecure")
def test_qdrant_url_flag_and_key_variable_choose_the_server_backend(monkeypatch, tmp_path):
    from pagelens.index.collections import Collections
    from pagelens.testing.servers import free_port

    url = f"http://127.0.0.1:{free_port()}"

    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: started.append(app))
    monkeypatch.setenv("PAGELENS_QDRANT_API_KEY", "qdrant-secret")
    monkeypatch.setenv("PAGELENS_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["serve", "--model", "some/model", "--qdrant-url", url])
    assert result.exit_code == 0, result.output
    settings = started[0].state.settings
    assert (settings.qdrant_url, settings.qdrant_api_key, settings.qdrant_prefix) == (url, "qdrant-secret", "pagelens_")
    collections = Collections.from_settings(settings)  # a client for that server (unreachable: fails at first use)
    assert collections.qdrant.init_options["url"] == url
    assert collections.qdrant.init_options["api_key"] == "qdrant-secret"
    collections.close()
    monkeypatch.delenv("PAGELENS_QDRANT_API_KEY")
    assert Collections.from_settings(Settings()).qdrant is None, "without a URL, collections stay on Edge"
