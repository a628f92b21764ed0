"""Any document a user has, over HTTP (issue #14): filled-in forms are drawn, an encrypted PDF
ingests with its `password` (422 without it or with a wrong one, the password in no log line, no
response and no stored file), a multi-page TIFF is a page per frame, office documents convert
through LibreOffice or are a 415 naming it. In-process, then the password through a real server."""

from __future__ import annotations

import io
import logging
import os

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pagelens.api import create_app
from pagelens.settings import Settings
from pagelens.testing.fake import FakeBackend
from tests.api.conftest import AUTH, fake_runtime
from tests.api.server import running_server
from tests.index.sample_documents import docx, encrypted, form_pdf, multipage_tiff
from tests.index.test_documents import pdfium_render
from tests.index.test_office import fake_soffice
from tests.index.test_pdf import make_pdf

PASSWORD = "Kx9-distinctive-Secret-5521"


def upload(client, data: bytes, name: str = "doc.pdf", **form):
    return client.post("/collections/c/documents", files={"file": (name, data, "application/octet-stream")}, data=form)


def page(client, document_id: str, number: int) -> np.ndarray:
    response = client.get(f"/collections/c/documents/{document_id}/pages/{number}")
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


@pytest.fixture
def client(tmp_path):
    settings = Settings(model="fake", api_key="test-key-123", data_dir=str(tmp_path / "data"), pdf_dpi=72,
                        office_timeout_seconds=20)  # fmt: skip
    runtime = fake_runtime(FakeBackend(dim=128), settings=settings)
    with TestClient(create_app(runtime=runtime), headers=AUTH) as test_client:
        assert test_client.post("/collections", json={"name": "c"}).status_code == 201
        yield test_client
    runtime.close()


def test_a_filled_form_uploads_and_its_page_image_shows_the_values(client):
    data = form_pdf("Filled in by hand")
    added = upload(client, data).json()
    rendered, drawn = page(client, added["id"], 1), pdfium_render(data, forms=True, dpi=72)
    assert (drawn != pdfium_render(data, forms=False, dpi=72)).any()
    assert rendered.shape == drawn.shape and (rendered == drawn).all()


def test_an_encrypted_pdf_ingests_with_its_password_only_and_the_password_is_nowhere(client, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    data = encrypted(make_pdf(3), PASSWORD)
    stored = upload(client, make_pdf(1), name="kept.pdf").json()
    for form, message in (({}, "the PDF is encrypted: give its password"),
                          ({"password": ""}, "the PDF is encrypted: give its password"),
                          ({"password": PASSWORD[::-1]}, "wrong password for the encrypted PDF")):  # fmt: skip
        response = upload(client, data, **form)
        assert response.status_code == 422, form
        assert response.json()["error"] == {"type": "unprocessable_document", "message": message}
    assert [d["id"] for d in client.get("/collections/c/documents").json()["documents"]] == [stored["id"]]
    added = upload(client, data, name="secret.pdf", password=PASSWORD)
    assert added.status_code == 200 and added.json()["pages"] == 3 and added.json()["created"]
    assert page(client, added.json()["id"], 2).shape == (300, 210, 3)  # no password asked again
    wrong_again = upload(client, data, password="nope")
    assert wrong_again.status_code == 422 and "wrong password" in wrong_again.text
    assert page(client, added.json()["id"], 3).shape == (300, 220, 3), "the stored document was touched"
    listed = client.get("/collections/c/documents").json()["documents"]
    assert sorted(d["id"] for d in listed) == sorted([stored["id"], added.json()["id"]])
    assert "POST /collections/c/documents status=422" in caplog.text, "the capture sees no request log"
    assert PASSWORD not in caplog.text and PASSWORD not in str(listed)
    files = [path for path in (tmp_path / "data").rglob("*") if path.is_file()]
    assert files and not [path for path in files if PASSWORD.encode() in path.read_bytes()]


def test_a_password_for_an_unencrypted_upload_is_ignored(client):
    for data, name in ((make_pdf(2), "plain.pdf"), (multipage_tiff([(40, 30)]), "scan.tiff")):
        response = upload(client, data, name=name, password="whatever")
        assert response.status_code == 200 and response.json()["created"], response.text


def test_a_multipage_tiff_is_a_page_per_frame(client):
    sizes = [(120, 160), (200, 100), (90, 90)]
    added = upload(client, multipage_tiff(sizes), name="fax.tiff").json()
    assert added["pages"] == 3
    assert [page(client, added["id"], n).shape[1::-1] for n in (1, 2, 3)] == sizes
    assert client.get(f"/collections/c/documents/{added['id']}/pages/4").status_code == 404


def test_an_office_upload_without_libreoffice_is_a_415_naming_it(client, monkeypatch, tmp_path):
    empty = tmp_path / "no-soffice"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    response = upload(client, docx(["a"]), name="report.docx")
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["type"] == "unsupported_media_type"
    assert "LibreOffice" in error["message"] and "apt-get install" in error["message"]
    assert client.get("/collections/c/documents").json() == {"documents": []}


def test_an_office_upload_converts_through_soffice_on_the_path(client, monkeypatch, tmp_path):
    command, calls = fake_soffice(tmp_path / "bin", pages=2)
    monkeypatch.setenv("PATH", f"{os.path.dirname(command)}{os.pathsep}{os.environ['PATH']}")
    added = upload(client, docx(["a", "b"]), name="report.docx").json()
    assert added["pages"] == 2 and added["created"]
    assert page(client, added["id"], 2).shape == (300, 210, 3)  # make_pdf(2)'s second page at 72 dpi
    assert len(calls.read_text().splitlines()) == 1


KEY = "any-document-key"


def test_a_real_server_logs_no_password_at_debug_level(tiny_model, tmp_path):
    log = tmp_path / "server.log"
    data = encrypted(make_pdf(2), PASSWORD)
    headers = {"Authorization": f"Bearer {KEY}"}
    env = {"PAGELENS_PDF_DPI": "36"}
    debug = ("--log-level", "debug")
    with (
        running_server(tiny_model, api_key=KEY, log_path=log, extra_args=debug, env=env) as url,
        httpx.Client(base_url=url, headers=headers, timeout=120) as http,
    ):
        assert http.post("/collections", json={"name": "c"}).status_code == 201

        def send(password: str | None) -> httpx.Response:
            form = {} if password is None else {"password": password}
            return http.post("/collections/c/documents", files={"file": ("s.pdf", data)}, data=form)

        assert send(None).status_code == 422
        wrong = send(PASSWORD + "x")
        assert wrong.status_code == 422 and PASSWORD not in wrong.text
        added = send(PASSWORD)
        assert added.status_code == 200 and added.json()["pages"] == 2, added.text
        assert http.get(f"/collections/c/documents/{added.json()['id']}/pages/2").status_code == 200
    text = log.read_text(errors="replace")
    assert "POST /collections/c/documents status=200" in text, "the log shows no upload at all"
    assert PASSWORD not in text
    data_dir = tmp_path / "data"
    assert not [p for p in data_dir.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
