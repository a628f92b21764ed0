"""`GET /ui`: the web page (static HTML, CSS and JavaScript modules in `static/`, shipped in the
wheel), and the HTML answer of `GET /` for browsers, which links to it.

The page and its assets are served without the API key (they hold no data: the page asks for the
key and sends it as a Bearer header on every API call), with security headers that keep data
from becoming code: a Content-Security-Policy allowing only this origin's scripts (no inline
script or handlers) and blob: images, `X-Content-Type-Options: nosniff`, `Referrer-Policy`.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse

from pagelens.errors import NotFound

UI_PATH = "/ui"
STATIC_DIR = Path(__file__).parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}  # fmt: skip
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidated (ETag) each load: a new version shows at once
}


def _assets() -> dict[str, Path]:
    """Every file under static/ by its URL path below /ui/ (index.html is /ui itself)."""
    return {
        path.relative_to(STATIC_DIR).as_posix(): path
        for path in STATIC_DIR.rglob("*")
        if path.is_file() and path.suffix in MEDIA_TYPES and path.name != "index.html"
    }


ASSETS = _assets()
UI_PATHS = frozenset({UI_PATH, *(f"{UI_PATH}/{name}" for name in ASSETS)})


def prefers_html(accept: str | None) -> bool:
    """Whether an Accept header asks for a page (a browser's navigation), not JSON (curl, httpx: */*)."""
    return bool(accept) and "text/html" in accept.lower()


def root_page(root_path: str = "") -> HTMLResponse:
    """`GET /` for a browser: a link to the page; nothing about the server (this answers without a key)."""
    link = escape(f"{root_path}{UI_PATH}")
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>pagelens</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f'<body><h1>pagelens</h1><p><a href="{link}">Open the web page</a> (upload, browse, search, ask). '
        "The JSON API answers clients that do not ask for HTML.</p></body></html>"
    )
    return HTMLResponse(body, headers={**SECURITY_HEADERS, "Vary": "Accept"})


async def ui_page() -> FileResponse:
    """The page. Its assets are linked relative to it (`ui/...`), and its API calls go to the
    path it was served under less `/ui`, so it works behind a proxy's path prefix."""
    return FileResponse(STATIC_DIR / "index.html", media_type=MEDIA_TYPES[".html"], headers=SECURITY_HEADERS)


async def ui_asset(asset: str) -> FileResponse:
    path = ASSETS.get(asset)
    if path is None:
        raise NotFound(f"no web page asset {asset!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=SECURITY_HEADERS)


def install_ui(app: FastAPI) -> None:
    """Add the page and its assets to `app`, outside the OpenAPI document."""
    app.add_api_route(UI_PATH, ui_page, methods=["GET"], include_in_schema=False)
    app.add_api_route(UI_PATH + "/{asset:path}", ui_asset, methods=["GET"], include_in_schema=False)
