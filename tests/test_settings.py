"""Settings: canonical variables and their legacy aliases, and the serve command's start-up checks."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pagelens
from pagelens.cli import app
from pagelens.settings import DEFAULT_MODEL, Settings

# field -> its variables, canonical first, then the legacy aliases in the order they are tried
ALIASED = {
    "model": ("PAGELENS_MODEL", "COLPALI_MODEL_ID"),
    "api_key": ("PAGELENS_API_KEY", "SERVICE_API_KEY"),
    "threads": ("PAGELENS_CPU_THREADS", "PAGELENS_THREADS", "CPU_THREADS"),
    "hf_token": ("HF_TOKEN", "HUGGINGFACE_TOKEN"),
}
# a distinct value per variable, so a test can tell which one a setting came from
VALUES = {"model": "org/m{}", "api_key": "key-{}", "threads": "{}", "hf_token": "hf_{}"}


def _value(field: str, position: int):
    text = VALUES[field].format(position + 2)
    return int(text) if field == "threads" else text


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in {n for names in ALIASED.values() for n in names} | {"PAGELENS_HF_TOKEN", "PAGELENS_NO_AUTH"}:
        monkeypatch.delenv(name, raising=False)


def test_defaults():
    settings = Settings()
    assert settings.model == DEFAULT_MODEL == "ModernVBERT/colmodernvbert-merged"
    assert (settings.api_key, settings.threads, settings.hf_token) == (None, None, None)
    assert settings.host == "127.0.0.1" and settings.max_body_bytes == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("field", "position", "name"), [(f, i, n) for f, ns in ALIASED.items() for i, n in enumerate(ns)]
)
def test_every_name_of_a_setting_is_read(monkeypatch, field, position, name):
    monkeypatch.setenv(name, str(_value(field, position)))
    assert getattr(Settings(), field) == _value(field, position)


@pytest.mark.parametrize("field", ALIASED)
def test_earlier_names_win_and_constructor_arguments_win_over_all(monkeypatch, field):
    names = ALIASED[field]
    for position in reversed(range(len(names))):  # set the last name first; each earlier one takes over
        monkeypatch.setenv(names[position], str(_value(field, position)))
        assert getattr(Settings(), field) == _value(field, position), names[position]
    explicit = _value(field, 7)
    assert getattr(Settings(**{field: explicit}), field) == explicit
    assert getattr(Settings(**{names[-1]: explicit}), field) == explicit, "by variable name too"


@pytest.mark.parametrize("field", ALIASED)
def test_an_empty_variable_does_not_hide_a_later_name(monkeypatch, field):
    *earlier, last = ALIASED[field]
    monkeypatch.setenv(last, str(_value(field, 0)))
    for name in earlier:
        monkeypatch.setenv(name, "")
    assert getattr(Settings(), field) == _value(field, 0)


def test_other_settings_keep_their_prefixed_names(monkeypatch):
    monkeypatch.setenv("PAGELENS_MAX_QUEUED_ITEMS", "7")
    monkeypatch.setenv("PAGELENS_HOST", "0.0.0.0")
    monkeypatch.setenv("PAGELENS_PORT", "")  # empty: the default
    settings = Settings()
    assert (settings.engine_overrides()["max_queued_items"], settings.host, settings.port) == (7, "0.0.0.0", 8000)


def test_the_hub_token_stays_out_of_the_repr():
    assert "hf_secret" not in repr(Settings(hf_token="hf_secret"))


def test_loopback_detection():
    assert Settings(host="127.0.0.1").loopback_only and Settings(host="localhost").loopback_only
    assert not Settings(host="0.0.0.0").loopback_only


@pytest.fixture
def started(monkeypatch):
    """The keyword arguments of every uvicorn.run the serve command reaches."""
    runs = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: runs.append(kwargs))
    return runs


def serve(*args: str):
    return CliRunner().invoke(app, ["serve", "--model", "some/model", *args])


@pytest.mark.parametrize(
    ("args", "variables"),
    [
        (["--api-key", ""], {}),
        (["--api-key", "  "], {}),
        ([], {"PAGELENS_API_KEY": " "}),
        ([], {"PAGELENS_API_KEY": "\t", "SERVICE_API_KEY": "key-2"}),  # a blank name still shadows the next one
        ([], {"SERVICE_API_KEY": " \n"}),
    ],
)
def test_a_blank_key_is_refused_at_start_up_in_one_line(monkeypatch, started, args, variables):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    result = serve(*args)
    assert result.exit_code == 2 and not started
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: setting ") and "empty or only whitespace" in line and "--no-auth" in line


def test_no_key_and_no_no_auth_refuses_to_start(monkeypatch, started):
    monkeypatch.setenv("PAGELENS_API_KEY", "")  # empty counts as unset
    result = serve()
    assert result.exit_code == 2 and not started
    (line,) = result.output.strip().splitlines()
    assert "no API key" in line and "--api-key" in line and "PAGELENS_API_KEY" in line and "--no-auth" in line
    both = serve("--api-key", "k", "--no-auth")
    assert both.exit_code == 2 and "drop one" in both.output and not started


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_no_auth_serves_keyless_with_a_warning_on_any_host(monkeypatch, started, caplog, how):
    if how == "variable":
        monkeypatch.setenv("PAGELENS_NO_AUTH", "1")
    no_auth = ["--no-auth"] if how == "flag" else []
    with caplog.at_level(logging.WARNING):
        result = serve(*no_auth)
    assert result.exit_code == 0, result.output
    assert "WITHOUT an API key" in caplog.text and started[0]["host"] == "127.0.0.1"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = serve("--host", "0.0.0.0", *no_auth)
    assert result.exit_code == 0, result.output
    assert "NO API KEY" in caplog.text and "0.0.0.0" in caplog.text and started[1]["host"] == "0.0.0.0"
    caplog.clear()
    monkeypatch.delenv("PAGELENS_NO_AUTH", raising=False)
    with caplog.at_level(logging.WARNING):
        assert serve("--host", "0.0.0.0", "--api-key", "k").exit_code == 0
    assert "API KEY" not in caplog.text.upper() and len(started) == 3


def test_make_serve_passes_the_key_or_no_auth():
    root = Path(pagelens.__file__).parents[2]
    environment = {name: value for name, value in os.environ.items() if not name.endswith("API_KEY")}

    def serve_line(*args: str) -> str:
        dry = subprocess.run(["make", "-n", "serve", *args], cwd=root, env=environment, capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr
        return next(line for line in dry.stdout.replace("\\\n", " ").splitlines() if "pagelens serve" in line)

    assert "--no-auth" in serve_line() and "--api-key" not in serve_line()
    assert '--api-key "k1"' in serve_line("API_KEY=k1") and "--no-auth" not in serve_line("API_KEY=k1")
    environment["SERVICE_API_KEY"] = "k2"
    assert '--api-key "k2"' in serve_line()


@pytest.mark.filterwarnings("ignore:Failed to obtain server version", "ignore:Api key is used with an insecure")
def test_qdrant_url_flag_and_key_variable_choose_the_server_backend(monkeypatch, tmp_path):
    from pagelens.index.collections import Collections
    from pagelens.testing.servers import free_port

    url = f"http://127.0.0.1:{free_port()}"

    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: started.append(app))
    monkeypatch.setenv("PAGELENS_QDRANT_API_KEY", "qdrant-secret")
    monkeypatch.setenv("PAGELENS_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["serve", "--model", "some/model", "--api-key", "k", "--qdrant-url", url])
    assert result.exit_code == 0, result.output
    settings = started[0].state.settings
    assert (settings.qdrant_url, settings.qdrant_api_key, settings.qdrant_prefix) == (url, "qdrant-secret", "pagelens_")
    collections = Collections.from_settings(settings)  # a client for that server (unreachable: fails at first use)
    assert collections.qdrant.init_options["url"] == url
    assert collections.qdrant.init_options["api_key"] == "qdrant-secret"
    collections.close()
    monkeypatch.delenv("PAGELENS_QDRANT_API_KEY")
    assert Collections.from_settings(Settings()).qdrant is None, "without a URL, collections stay on Edge"


# the only modules that read the process environment; bench/ may hand all of it to a subprocess
ENVIRONMENT_READERS = ("settings.py", "deploy/modal_settings.py")
OS_ENVIRONMENT = {"environ", "environb", "getenv", "getenvb"}


def environment_reads(source: str, *, allow_whole_environ: bool) -> list[tuple[int, str]]:
    """(line, name) of each use of os.environ / os.getenv (however imported) in `source`; with
    `allow_whole_environ`, `os.environ` passed on whole (`env=os.environ`, `{**os.environ}`,
    `dict(os.environ)`) is not counted."""
    tree = ast.parse(source)
    modules, names = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.asname or alias.name for alias in node.names if alias.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            names |= {alias.asname or alias.name: alias.name for alias in node.names if alias.name in OS_ENVIRONMENT}
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            name = node.attr if node.attr in OS_ENVIRONMENT else None
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            name = names.get(node.id)
        else:
            continue
        passed_whole = isinstance(parents.get(node), (ast.keyword, ast.Dict, ast.Call)) and not (
            isinstance(parents[node], ast.Call) and parents[node].func is node
        )
        if name and not (allow_whole_environ and name == "environ" and passed_whole):
            reads.append((node.lineno, name))
    return sorted(reads)


def test_the_environment_check_finds_every_way_of_reading_it():
    source = """import os
import os as system
from os import getenv, environ as variables
os.environ.get("A")
system.getenv("B")
getenv("C")
variables["D"]
"E" in os.environ
subprocess.run(command, env=os.environ)
subprocess.run(command, env={**variables, "F": "1"})
os.path.join("environ", "getenv")
"""
    assert environment_reads(source, allow_whole_environ=False) == [
        (4, "environ"), (5, "getenv"), (6, "getenv"), (7, "environ"), (8, "environ"), (9, "environ"), (10, "environ"),
    ]  # fmt: skip
    assert [line for line, _ in environment_reads(source, allow_whole_environ=True)] == [4, 5, 6, 7, 8]


def test_only_the_settings_modules_read_the_environment():
    package = Path(pagelens.__file__).parent
    assert all((package / reader).is_file() for reader in ENVIRONMENT_READERS)
    found = [
        f"{relative}:{line} os.{name}"
        for path in sorted(package.rglob("*.py"))
        if (relative := path.relative_to(package).as_posix()) not in ENVIRONMENT_READERS
        for line, name in environment_reads(path.read_text(), allow_whole_environ=relative.startswith("bench/"))
    ]
    assert found == [], "read the variable in Settings (or ModalSettings) and pass the value down"


def test_the_pixel_capacity_reaches_the_engine(monkeypatch):
    monkeypatch.setenv("PAGELENS_MAX_QUEUED_PIXELS", "5000000")
    from pagelens.engine import EngineConfig

    assert EngineConfig.for_device("cpu", **Settings().engine_overrides()).max_queued_pixels == 5_000_000
    assert Settings(max_queued_pixels=7).engine_overrides()["max_queued_pixels"] == 7


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("PAGELENS_RECALL_SAMPLE", "1.5", "between 0 (never) and 1 (every one), got 1.5"),
        ("PAGELENS_RECALL_SAMPLE", "-0.01", "got -0.01"),
        ("PAGELENS_RECALL_SAMPLE", "nan", "got nan"),
        ("PAGELENS_TARGET_RECALL", "0.4", "between 0.5 and 1, got 0.4"),
        ("PAGELENS_TARGET_RECALL", "1.01", "between 0.5 and 1, got 1.01"),
    ],
)
def test_a_recall_setting_out_of_range_is_refused_at_start_up_in_one_line(monkeypatch, started, variable, value,
                                                                          words):  # fmt: skip
    monkeypatch.setenv(variable, value)
    result = serve("--api-key", "k")
    assert result.exit_code == 2 and not started
    (line,) = result.output.strip().splitlines()
    field = variable.removeprefix("PAGELENS_").lower()
    assert line.startswith(f"error: setting {field}: ") and variable in line and words in line


def test_recall_settings_at_their_bounds_are_accepted(monkeypatch):
    assert (Settings().recall_sample, Settings().target_recall) == (0.02, 0.95)
    for sample, target in ((0.0, 0.5), (1.0, 1.0)):
        settings = Settings(recall_sample=sample, target_recall=target)
        assert (settings.recall_sample, settings.target_recall) == (sample, target)
