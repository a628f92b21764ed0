"""`pagelens heatmap`, embedded (the tiny model in this process) and against the session's real
server (`--url`): the PNG is the page with the map blended over it, `--json` the route's maps, and
a page without a map or an unknown page fails in one line."""

from __future__ import annotations

import io
import uuid

from PIL import Image

from tests.cli.test_cli_commands import Where, where  # noqa: F401  (the fixture)
from tests.conftest import encode, make_page


def test_the_heatmap_command_writes_the_overlay_and_prints_the_maps(where: Where, tmp_path):  # noqa: F811
    name = f"cli-heatmap-{uuid.uuid4().hex[:8]}"
    page = tmp_path / "page.png"
    page.write_bytes(encode(make_page(300, 400, 11)))
    where.run("index", "add", str(page), "-c", name, model=True)
    (document,) = where.json("documents", "list", "-c", name, "--json")["documents"]
    doc_id = document["id"]

    out = tmp_path / "heat.png"
    written = where.run("heatmap", doc_id, "1", "-c", name, "-q", "total due", "-o", str(out), model=True)
    assert f"wrote {out}" in written.output
    overlay = Image.open(io.BytesIO(out.read_bytes()))
    assert overlay.format == "PNG" and overlay.size == (300, 400)
    one_token = tmp_path / "token.png"
    where.run("heatmap", doc_id, "1", "-c", name, "-q", "total due", "--token", "1", "-o", str(one_token), model=True)
    assert one_token.read_bytes() != out.read_bytes()

    maps = where.json("heatmap", doc_id, "1", "-c", name, "-q", "total due", "--json", model=True)
    assert "".join(maps["tokens"]) == "total due"
    h, w = maps["grid"]
    assert [len(maps["maps"][0]), len(maps["maps"][0][0])] == [h, w] and h > w  # a portrait page

    missing = where.run("heatmap", doc_id, "2", "-c", name, "-q", "total due", model=True, expect=2)
    assert "has pages 1..1, not 2" in missing.output and "Traceback" not in missing.output
