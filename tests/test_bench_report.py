"""The bench report module: command line, table, JSON fields and the docs section it rewrites."""

from __future__ import annotations

import json

from pagelens.bench.report import Report, command_line, format_table, replace_section

DOC = "# Benchmarks\n\nprose before\n\n<!-- bench:demo -->\nold table\n<!-- /bench:demo -->\n\nprose after\n"


def test_command_line_reproduces_the_options():
    args = {"pages": 4, "full_depth": False, "arch": ["a", "b"], "model": None, "update_docs": True}
    expected = "pagelens bench engine --pages 4 --no-full-depth --arch a --arch b --update-docs"
    assert command_line("engine", args) == expected


def test_table_formats_numbers_and_keeps_column_order():
    table = format_table([{"name": "x", "rate": 0.19712, "big": 1954.4}, {"name": "y", "rate": 12.345, "extra": None}])
    lines = table.splitlines()
    assert lines[0] == "| name | rate | big | extra |"
    assert lines[1] == "| --- | ---: | ---: | ---: |"
    assert lines[2] == "| x | 0.197 | 1954 | - |" and lines[3] == "| y | 12.3 | - | - |"


def test_replace_section_keeps_the_prose_and_appends_missing_sections():
    replaced = replace_section(DOC, "demo", "new table")
    assert "old table" not in replaced and "<!-- bench:demo -->\nnew table\n<!-- /bench:demo -->" in replaced
    assert replaced.startswith("# Benchmarks\n\nprose before") and replaced.endswith("prose after\n")
    assert replace_section(replaced, "demo", "new table") == replaced
    appended = replace_section(DOC, "other", "$1 \\1 figures")  # replacement text is taken literally
    assert appended.startswith(DOC.rstrip("\n")) and "## `pagelens bench other`" in appended
    assert appended.endswith("<!-- bench:other -->\n$1 \\1 figures\n<!-- /bench:other -->\n")


def test_finish_writes_json_with_machine_info_and_refreshes_the_docs(tmp_path, capsys):
    docs = tmp_path / "benchmarks.md"
    docs.write_text(DOC)
    report = Report("demo", {"pages": 2})
    report.machine["bf16_matmul_gflops"] = 123.4
    report.describe("2 pages of nothing")
    report.add_row({"configuration": "a", "pages/s": 1.5})
    report.add_row({"configuration": "b", "pages/s": 3.0})
    report.add_row({"kind": "side"}, table="second table")
    report.figures["ratio"] = 2.0
    report.note("b is 2.00x a")
    result = report.finish(tmp_path / "out" / "demo.json", docs)

    written = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert written["command"] == "pagelens bench demo --pages 2" and written["args"] == {"pages": 2}
    assert {"cpu", "cores", "torch", "transformers", "git_commit", "date"} <= set(written["machine"])
    assert written["tables"]["main"][1] == {"configuration": "b", "pages/s": 3.0}
    assert written["figures"] == {"ratio": 2.0} and written["notes"] == ["b is 2.00x a"]
    text = docs.read_text()
    assert "old table" not in text and "prose before" in text and "prose after" in text
    section = text.split("<!-- bench:demo -->")[1].split("<!-- /bench:demo -->")[0]
    assert "| b | 3.00 |" in section and "**second table**" in section and "123 GFLOP/s" in section
    assert "`pagelens bench demo --pages 2`" in section and "2 pages of nothing" in section
    assert "| b | 3.00 |" in capsys.readouterr().out


def test_finish_without_docs_leaves_no_doc(tmp_path):
    Report("demo", {}).finish(tmp_path / "demo.json", docs_path=None)
    assert json.loads((tmp_path / "demo.json").read_text())["bench"] == "demo"


def test_finish_starts_a_docs_file_that_is_not_there_yet(tmp_path):
    """A long bench given `--docs` naming a new file writes its section there, not an error after the run."""
    docs = tmp_path / "new" / "figures.md"
    report = Report("demo", {"pages": 3})
    report.add_row({"configuration": "a", "pages/s": 1.5})
    report.finish(tmp_path / "demo.json", docs)
    section = docs.read_text().split("<!-- bench:demo -->")[1].split("<!-- /bench:demo -->")[0]
    assert "| a | 1.50 |" in section and "`pagelens bench demo --pages 3`" in section
