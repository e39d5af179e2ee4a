#!/usr/bin/env bash
# Install collapseguard in editable mode with the given extras (default: all).
#   bash scripts/setup.sh          # library + Lightning + transformers + TRL + plots
#   bash scripts/setup.sh dev      # the above + test tools, reference implementations and, for the
#                                  # report's browser test, Debian's chromium (apt, where missing)
#   bash scripts/setup.sh bench    # the above + the peer packages the benchmarks compare against
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
if [ "$extras" = "bench" ]; then
  # a peer for the speed benchmark; --no-deps: its requirements would downgrade transformers
  "$py" -m pip install --quiet --no-deps "diversity==0.3.1"
fi
if [ "$extras" = "dev" ] || [ "$extras" = "bench" ]; then
  # the HTML report is tested in a real headless browser
  if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    sudo_cmd=""
    if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; fi
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = "0" ] || [ -n "$sudo_cmd" ]; }; then
      echo "setup: installing chromium (Debian package) for the report's browser test"
      $sudo_cmd apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
    else
      echo "setup: warning: no chromium and no apt-get/root to install it; the report's browser test will fail" >&2
    fi
  fi
fi
