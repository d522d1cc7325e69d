#!/usr/bin/env bash
# The main job: set up, then train a Fashion-MNIST tokenizer and a class-conditional prior, save
# the generator bundle and write sample and reconstruction PNGs to outputs/demo/ (scripts/demo.py).
# `bash scripts/demo.sh speech` runs the speech part instead (scripts/demo_speech.py): WAVs and
# spectrograms in outputs/demo/speech/; `bash scripts/demo.sh frames` the first-person frames part
# (scripts/demo_frames.py): PNGs in outputs/demo/frames/.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"
if [ "${1:-}" = "speech" ]; then
  shift
  exec .venv/bin/python scripts/demo_speech.py "$@"
fi
if [ "${1:-}" = "frames" ]; then
  shift
  exec .venv/bin/python scripts/demo_frames.py "$@"
fi
exec .venv/bin/python scripts/demo.py "$@"
