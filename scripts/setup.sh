#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the project with its pinned dependencies.
# Re-running is cheap: the install is skipped when pyproject.toml has not changed since the last one.
#   --browser   also install Chromium (a system package, via apt-get) for the book's screenshot test
#               (tests/test_book.py, slow); nothing else needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip 'setuptools<81' wheel
  .venv/bin/python -m pip install -q -e '.[test]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
echo "environment ready: source .venv/bin/activate"
