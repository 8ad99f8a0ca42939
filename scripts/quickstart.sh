#!/usr/bin/env bash
# The main job on built-in data: meta-train a thermistor (NTC) calibration model with Meta-SGD, then
# evaluate 3-point adaptation on 500 new simulated units against classic calibration (3 and 10 points),
# writing a report with plots to reports/quickstart-ntc.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN="${1:-runs/quickstart-ntc}"
if [ -f "$RUN/state.json" ]; then
  .venv/bin/metaedge train --config configs/ntc-metasgd.json --out "$RUN" --resume   # continue or no-op
else
  .venv/bin/metaedge train --config configs/ntc-metasgd.json --out "$RUN"
fi
.venv/bin/metaedge eval "$RUN" --tasks 500 --shots 3 --baseline-shots 10 --steps 0,1,5,10 \
  --report "reports/$(basename "$RUN")"
