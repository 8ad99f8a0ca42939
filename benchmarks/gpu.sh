#!/usr/bin/env bash
# GPU benchmarks (benchmarks/gpu.py): meta-training speed against learn2learn on the same GPU, and Omniglot to the
# papers' budget or what fits. Uses $PYTHON (default: .venv/bin/python, else python3) with a CUDA build of torch.
# Where metaedge is not installed (a bare GPU machine with torch), the checkout is put on PYTHONPATH through a
# package view (metaedge -> metaedge/, metaedge/sdk -> sdk/, ...), as the wheel maps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import metaedge.sdk" 2>/dev/null; then
  view="$(mktemp -d)"
  mkdir -p "$view/metaedge"
  for f in metaedge/*.py; do ln -s "$PWD/$f" "$view/metaedge/"; done
  for part in sdk export runtime devices knowledge; do ln -s "$PWD/$part" "$view/metaedge/$part"; done
  export PYTHONPATH="$view${PYTHONPATH:+:$PYTHONPATH}"
  echo "metaedge is not installed for $PY: using the checkout through $view"
fi
exec "$PY" benchmarks/gpu.py "$@"
