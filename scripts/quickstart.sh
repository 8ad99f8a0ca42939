#!/usr/bin/env bash
# The main job on built-in data: meta-train a thermistor (NTC) calibration model with Meta-SGD,
# then evaluate 3-point adaptation on 500 new simulated units against classic calibration.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN="${1:-runs/quickstart-ntc}"
.venv/bin/metaedge train --config configs/ntc-metasgd.json --out "$RUN" --iterations "${ITERATIONS:-3000}" \
  || .venv/bin/metaedge train --config configs/ntc-metasgd.json --out "$RUN" --iterations "${ITERATIONS:-3000}" --resume
.venv/bin/metaedge eval "$RUN" --tasks 500 --shots 3 --baseline-shots 10 --steps 0,1,5,10
