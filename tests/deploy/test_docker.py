"""The Docker images: no engine runs here, so test what the image runs. The Dockerfile's own CMD,
with its own ENV, serves a tiny model, and its HEALTHCHECK command passes against it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from pagelens.testing.servers import free_port

DOCKER_DIR = Path(__file__).resolve().parents[2] / "deploy" / "docker"
DOCKERFILES = [DOCKER_DIR / "Dockerfile", DOCKER_DIR / "Dockerfile.cuda"]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def image_env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in instructions(dockerfile):
        if keyword == "ENV":
            for assignment in shlex.split(rest):
                name, _, value = assignment.partition("=")
                env[name] = value
    return env


def exec_form(dockerfile: Path, keyword: str) -> list[str]:
    (rest,) = [rest for kw, rest in instructions(dockerfile) if kw == keyword]
    if keyword == "HEALTHCHECK":
        rest = rest[rest.index("CMD") + 3 :].strip()
    return json.loads(rest)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_locked_non_root_with_a_health_check(dockerfile):
    pairs = instructions(dockerfile)
    runs = " ".join(rest for kw, rest in pairs if kw == "RUN")
    assert "uv sync --frozen --no-dev" in runs
    users = [rest for kw, rest in pairs if kw == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert exec_form(dockerfile, "CMD") == ["pagelens", "serve"]
    assert "/health" in " ".join(exec_form(dockerfile, "HEALTHCHECK"))
    env = image_env(dockerfile)
    assert env["PAGELENS_HOST"] == "0.0.0.0" and env["HF_HOME"].startswith("/data")
    assert env["PAGELENS_DATA_DIR"] == "/data/pagelens"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_have_a_headless_libreoffice_for_office_uploads(dockerfile):
    (run,) = [rest for kw, rest in instructions(dockerfile) if kw == "RUN" and "libreoffice" in rest]
    packages = set(run.split())
    assert {"libreoffice-writer-nogui", "libreoffice-calc-nogui", "libreoffice-impress-nogui"} <= packages
    assert "--no-install-recommends" in packages and "fonts-liberation2" in packages
    assert run.rstrip().endswith("rm -rf /var/lib/apt/lists/*"), "the apt lists stay in the layer"


def test_compose_mounts_the_caches_and_requires_a_key():
    compose = yaml.safe_load((DOCKER_DIR / "compose.yaml").read_text())
    for name in ("pagelens-cpu", "pagelens-gpu"):
        service = {**compose["x-pagelens"], **compose["services"][name]}
        assert any(v.endswith(":/data/huggingface") for v in service["volumes"])
        assert any(v.endswith(":/data/pagelens") for v in service["volumes"])
        assert "?" in service["environment"]["PAGELENS_API_KEY"]
    gpu = compose["services"]["pagelens-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia"


def test_the_image_command_serves_and_passes_its_health_check(tiny_model, tmp_path):
    dockerfile = DOCKERFILES[0]
    port = free_port()
    env = {
        **os.environ,
        **{k: v for k, v in image_env(dockerfile).items() if k != "PATH" and not k.startswith("UV_")},
        "PAGELENS_HOST": "127.0.0.1",  # tests stay on loopback; the image binds 0.0.0.0
        "PAGELENS_PORT": str(port),
        "PAGELENS_MODEL": str(tiny_model),
        "PAGELENS_API_KEY": "docker-key",
        "PAGELENS_DEVICE": "cpu",
        "PAGELENS_DATA_DIR": str(tmp_path / "data"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "HF_HUB_OFFLINE": "1",
    }
    command = exec_form(dockerfile, "CMD")
    command[0] = str(Path(sys.executable).with_name(command[0]))  # the venv's console script
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log_path.read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.3)
        health = exec_form(dockerfile, "HEALTHCHECK")
        health[0] = sys.executable
        assert subprocess.run(health, env=env, timeout=30).returncode == 0
        info = httpx.get(f"http://127.0.0.1:{port}/", headers={"Authorization": "Bearer docker-key"}).json()
        assert info["model"]["family"] == "colqwen2_5"
        env_without_server = {**env, "PAGELENS_PORT": str(free_port())}
        assert subprocess.run(health, env=env_without_server, timeout=30, capture_output=True).returncode != 0
    finally:
        process.terminate()
        process.wait(30)
