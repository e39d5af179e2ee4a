#!/usr/bin/env bash
# Install collapseguard in editable mode with the given extras (default: all).
#   bash scripts/setup.sh          # library + Lightning + transformers + plots
#   bash scripts/setup.sh dev      # the above + test tools and reference implementations
#   bash scripts/setup.sh core     # numpy/scipy only
# torch: where none is installed, the CPU wheel torch==2.13.0 is installed first, so that
# the extras' "torch>=2.1" is already met and pip never pulls a multi-GB CUDA build.
# A torch you already have is never replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
py="${PYTHON:-python3}"
if [ "$extras" = "core" ]; then
  exec "$py" -m pip install --quiet -e .
fi
if ! "$py" -c "import torch" >/dev/null 2>&1; then
  echo "setup: no torch found; installing the CPU wheel torch==2.13.0"
  "$py" -m pip install --quiet "torch==2.13.0"
fi
"$py" -m pip install --quiet -e ".[${extras}]"
