"""Who may call the API: the start-up choice between a key and `no_auth`, and the paths open without a key.

An app never starts keyless by accident: without a key it needs `no_auth` (`--no-auth`,
`PAGELENS_NO_AUTH=1`), and then logs a warning whatever the host. A blank key never gets this far
(`Settings` refuses it).
"""

from __future__ import annotations

import logging

from pagelens.settings import Settings

log = logging.getLogger("pagelens")

HEALTH_PATH = "/health"
DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"


class AuthNotConfigured(ValueError):
    """The app would serve with no API key and no explicit `no_auth`, or with both."""


def check_auth(settings: Settings) -> None:
    """Refuse settings with neither a key nor `no_auth`, or with both; warn when serving keyless."""
    if settings.api_key and settings.no_auth:
        raise AuthNotConfigured("both an API key and --no-auth (PAGELENS_NO_AUTH) are set: drop one")
    if settings.api_key:
        return
    if not settings.no_auth:
        raise AuthNotConfigured(
            "no API key: set --api-key, PAGELENS_API_KEY or SERVICE_API_KEY, "
            "or pass --no-auth (PAGELENS_NO_AUTH=1) to serve without one"
        )
    if settings.loopback_only:
        log.warning("serving WITHOUT an API key (--no-auth): every local user and process can use it")
    else:
        log.warning(
            "\n%s\nNO API KEY (--no-auth) while listening on %s: anyone who can reach this port can use the model\n"
            "and every collection. Set --api-key, PAGELENS_API_KEY or SERVICE_API_KEY.\n%s",
            "!" * 72, settings.host, "!" * 72,
        )  # fmt: skip


def open_paths(settings: Settings, docs_assets: frozenset[str] = frozenset()) -> frozenset[str]:
    """Paths served without a key: /health always; the docs page, its assets and the OpenAPI
    document when `public_docs` is set."""
    if not settings.public_docs:
        return frozenset({HEALTH_PATH})
    return frozenset({HEALTH_PATH, DOCS_PATH, OPENAPI_PATH, *docs_assets})
