"""The layers of DESIGN.md hold in the code: entry points (api, the CLI, deploy) go through
pagelens.service and never import pagelens.index or pagelens.engine themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pagelens

PACKAGE = Path(pagelens.__file__).parent
ENTRY_POINTS = [*sorted((PACKAGE / "api").rglob("*.py")), *sorted((PACKAGE / "cli").rglob("*.py")),
                *sorted((PACKAGE / "deploy").rglob("*.py"))]  # fmt: skip
BELOW_THE_SERVICE = ("pagelens.index", "pagelens.engine")


def imported_modules(path: Path) -> list[str]:
    """Every module `path` imports, wherever the import statement is (functions and TYPE_CHECKING too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
    return found


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_entry_points_import_nothing_below_the_service(path):
    crossing = [name for name in imported_modules(path) if name.startswith(BELOW_THE_SERVICE)]
    assert crossing == [], f"{path.name} imports {crossing}; go through pagelens.service"


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pagelens.index.pages import DIM\n")
    assert imported_modules(module) == ["pagelens.index.pages"]


def test_every_command_line_module_is_checked():
    assert {path.name for path in ENTRY_POINTS if path.parent.name == "cli"} >= {"app.py", "backends.py", "index.py"}


def test_the_command_line_starts_without_importing_torch():
    """`pagelens --help` and the --url commands stay quick: torch loads only when a model does."""
    import subprocess
    import sys

    code = "import sys, pagelens.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_the_commands_over_a_server_run_without_importing_torch():
    """The settings (the default key) and the HTTP client are all a `--url` command needs."""
    import subprocess
    import sys

    code = (
        "import sys; from pagelens.cli.backends import open_backend\n"
        "with open_backend('http://127.0.0.1:9', None): pass\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
