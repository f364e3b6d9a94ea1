#!/usr/bin/env bash
# Sets PortraitTalk up in ./.venv (or $VENV): PyTorch, the package with its requirements (face detection
# included) and its training and test extras, and nothing else. Safe to run again: what is there already is kept.
#
# PyTorch: an installed torch is never replaced. Without one, a machine with an NVIDIA GPU gets the
# registry's default (CUDA) build; one without gets torch==$TORCH_VERSION (on our machines the local
# CPU wheel). Elsewhere, point TORCH_INDEX_URL at PyTorch's CPU wheel index to avoid the CUDA download.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

# System packages: espeak-ng speaks the procedural dataset's sentences (portraittalk synth). PyAV brings
# its own FFmpeg, so nothing else is needed. Skipped, with a note, where apt-get can't be used.
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing espeak-ng (apt-get)"
    { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; } || echo "setup: could not install espeak-ng; portraittalk synth will not run"
  else
    echo "setup: espeak-ng missing (install it with your package manager for portraittalk synth)"
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }

if "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found: installing the default (CUDA) torch build"
  pip_install "torch>=2.1"
else
  echo "setup: no GPU: installing the CPU build of torch $TORCH_VERSION"
  pip_install "torch==$TORCH_VERSION" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi

pip_install -e ".[train,dev]"   # requirements.txt (mediapipe included where it has wheels) and the extras
"$PY" -c "import portraittalk_core.cli" && echo "setup: done; run $VENV/bin/portraittalk --help"
