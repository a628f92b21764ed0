"""Deployment shells over the same ASGI app: Modal (modal_app.py); Docker files live in deploy/ at the repo root."""
