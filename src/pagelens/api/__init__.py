"""The HTTP layer: FastAPI app factory, one router per wire format, auth, limits, metrics."""

from pagelens.api.app import create_app

__all__ = ["create_app"]
