#!/usr/bin/env bash
# The main job: set up, then train a Fashion-MNIST tokenizer and a class-conditional prior, save
# the generator bundle and write sample and reconstruction PNGs to outputs/demo/ (scripts/demo.py).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"
exec .venv/bin/python scripts/demo.py "$@"
