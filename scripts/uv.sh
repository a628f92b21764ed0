#!/usr/bin/env bash
# Run the pinned uv, installing it with pip first on a machine that has none.
set -euo pipefail
UV_VERSION=0.13.8
if command -v uv >/dev/null 2>&1 && [ "$(uv --version | cut -d' ' -f2)" = "$UV_VERSION" ]; then
  exec uv "$@"
fi
if ! python3 -m uv --version >/dev/null 2>&1; then
  python3 -m pip install --quiet --user "uv==$UV_VERSION" 2>/dev/null \
    || PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --user "uv==$UV_VERSION" \
    || python3 -m pip install --quiet "uv==$UV_VERSION"
fi
exec python3 -m uv "$@"
