"""`GET /ui` and its assets: served without the key, with security headers; `GET /` links to it for a
browser and stays JSON for API clients; the shipped files hold no inline script and never parse data
as HTML."""

from __future__ import annotations

import re

import pytest

from pagelens.api.ui import ASSETS, CONTENT_SECURITY_POLICY, STATIC_DIR, UI_PATHS

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def assert_secure(response) -> None:
    policy = response.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "img-src 'self' blob:" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.fixture
def anonymous(client):
    """The app's test client without the API key."""
    client.headers.pop("Authorization")
    return client


def test_the_page_and_its_assets_need_no_key_and_carry_security_headers(anonymous):
    page = anonymous.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert_secure(page)
    assert '<script type="module" src="ui/js/main.js"></script>' in page.text
    for name, media in {"js/main.js": "text/javascript", "style.css": "text/css", "icon.svg": "image/svg+xml"}.items():
        asset = anonymous.get(f"/ui/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media), name
        assert_secure(asset)
    assert anonymous.get("/collections").status_code == 401, "the page opened the API"
    assert anonymous.get("/ui/nothing.js").status_code == 401  # not an asset: not open either


def test_an_unknown_asset_is_a_404_with_the_key(client):
    response = client.get("/ui/js/nothing.js")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"
    assert "__init__.py" not in ASSETS and all(not name.endswith(".py") for name in ASSETS)


def test_root_links_to_the_page_for_browsers_and_stays_json_for_clients(client, anonymous):
    page = anonymous.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="/ui"' in page.text and "fake" not in page.text  # no server details without the key
    assert page.headers["vary"] == "Accept"
    assert_secure(page)
    assert anonymous.get("/", headers={"Accept": "*/*"}).status_code == 401
    assert anonymous.get("/").status_code == 401


def test_root_with_the_key_is_still_the_json_server_info(client):
    info = client.get("/", headers={"Accept": "*/*"})
    assert info.status_code == 200 and info.json()["name"] == "pagelens" and "/ui" in info.json()["routes"]
    assert client.get("/", headers={"Accept": "application/json"}).json()["name"] == "pagelens"


def test_a_wrong_key_on_root_is_refused_even_for_a_browser(anonymous):
    response = anonymous.get("/", headers={"Accept": BROWSER_ACCEPT, "Authorization": "Bearer wrong"})
    assert response.status_code == 401


def test_every_open_path_is_a_shipped_file():
    assert {"/ui", "/ui/js/main.js", "/ui/js/api.js", "/ui/style.css"} <= UI_PATHS
    for path in UI_PATHS - {"/ui"}:
        assert (STATIC_DIR / path.removeprefix("/ui/")).is_file()


def test_the_html_has_no_inline_script_or_handlers_and_links_only_shipped_files():
    html = (STATIC_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE), "inline event handler"
    assert "style=" not in html, "inline style"
    for reference in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert reference.startswith("ui/") and reference.removeprefix("ui/") in ASSETS, reference
    assert "http://" not in html and "https://" not in html


def test_the_scripts_never_parse_data_as_html_and_import_only_shipped_modules():
    for path in (STATIC_DIR / "js").glob("*.js"):
        source = path.read_text()
        for sink in ("innerHTML", "outerHTML =", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in source, (path.name, sink)
        assert "http://" not in source and "https://" not in source, path.name  # nothing from another host
        for module in re.findall(r'from "\./([^"]+)"', source):
            assert f"js/{module}" in ASSETS, (path.name, module)
        assert "?key=" not in source and "api_key=" not in source  # the key travels only as a header
