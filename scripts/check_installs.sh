#!/usr/bin/env bash
# Every command in the smallest install that claims to support it: builds the wheel once, installs it three ways
# (plain: numpy + click + tqdm + the C library; [runtime]: + onnxruntime; [train]: + torch, onnx, onnxruntime, ...)
# in fresh venvs under $WORK, and prints one row per command: install, command, exit code, tracebacks, last line.
# A command either works or exits 1 with one sentence naming what to install; any traceback fails the script.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${WORK:-$(mktemp -d /tmp/metaedge-installs-XXXX)}"
TORCH_SPEC="${METAEDGE_TORCH:-torch==2.13.0}"
mkdir -p "$WORK" && cd "$WORK" || exit 1
python3 -m pip wheel -q "$ROOT" --no-deps -w wheel >/dev/null
W=$(ls "$WORK"/wheel/metaedge-*.whl)
for v in plain runtime train; do python3 -m venv "v-$v"; done
v-plain/bin/pip install -q "$W" >/dev/null 2>&1
v-runtime/bin/pip install -q "$W[runtime]" >/dev/null 2>&1
v-train/bin/pip install -q "$TORCH_SPEC" >/dev/null 2>&1 && v-train/bin/pip install -q "$W[train]" "$TORCH_SPEC" >/dev/null 2>&1
T=v-train/bin/metaedge
$T train --family sensor-pressure --algo ridge --shots 3 --iterations 30 --hidden 8 --skip --out run --no-progress >/dev/null
$T export run -o all.meb >/dev/null && $T export run -o onnx.meb --format onnx >/dev/null
v-train/bin/python - <<'PY'
import csv
import numpy as np
from metaedge.sdk.tasks import make_family
t = make_family("sensor-pressure").sample_task(np.random.default_rng(0), 3, 5)
with open("support.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["bridge_output", "temperature", "pressure"])
    w.writerows([[*x, *y] for x, y in zip(t.x_support, t.y_support)])
with open("inputs.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["bridge_output", "temperature"]); w.writerows(t.x_query.tolist())
PY
failed=0
echo "| install | command | exit | tracebacks | last line |"
echo "| --- | --- | --- | --- | --- |"
for v in plain runtime train; do
  for cmd in "--version" "families" "devices" "train --family sinusoid --iterations 2 --out r-$v --no-progress" \
             "eval run --tasks 5" "export run -o e-$v.meb" "adapt all.meb --support support.csv --out s-$v.npz" \
             "adapt onnx.meb --support support.csv --out o-$v.npz" "predict all.meb --state s-$v.npz --input inputs.csv" \
             "bench all.meb --shots 3 --repeats 3" "bench onnx.meb --shots 3 --repeats 3"; do
    out=$("v-$v/bin/metaedge" $cmd 2>&1); rc=$?
    tb=$(grep -c Traceback <<<"$out")
    [ "$tb" = 0 ] || failed=1
    echo "| $v | \`metaedge $cmd\` | $rc | $tb | $(grep -v '^ ' <<<"$out" | tail -1 | cut -c1-160) |"
  done
done
exit $failed
