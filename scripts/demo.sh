#!/usr/bin/env bash
# The main job: set up, then train the Fashion-MNIST VQ-VAE with each quantizer and write the
# comparison table, reconstructions and codebook-usage plot to outputs/demo/.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"
exec .venv/bin/python benchmarks/quantizer_quality.py --output-dir outputs/demo "$@"
