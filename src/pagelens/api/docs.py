"""`GET /docs`: Swagger UI served by pagelens itself, so the page loads nothing from a CDN.

The assets are swagger-ui-dist's (Apache-2.0), as packaged by `fastapi-offline` (MIT, pinned in
pyproject.toml): only its static files are used.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from pagelens.api.security import DOCS_PATH, OPENAPI_PATH
from pagelens.errors import NotFound

ASSET_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}
ASSET_PATHS = frozenset(f"{DOCS_PATH}/{name}" for name in ASSETS)
# no syntax highlighting (huge embedding payloads freeze it); no validator badge (it calls validator.swagger.io)
SWAGGER_PARAMETERS = {"syntaxHighlight": False, "validatorUrl": None}


async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{OPENAPI_PATH}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{DOCS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_PATH}/favicon.png",
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    )


async def swagger_asset(asset: str) -> FileResponse:
    if asset not in ASSETS:
        raise NotFound(f"no docs asset {asset!r}")
    return FileResponse(ASSET_DIR / asset, media_type=ASSETS[asset])


def install_docs(app: FastAPI) -> None:
    """Add the docs page and its assets to `app`, outside the OpenAPI document."""
    app.add_api_route(DOCS_PATH, swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(DOCS_PATH + "/{asset}", swagger_asset, methods=["GET"], include_in_schema=False)
