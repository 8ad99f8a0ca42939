#!/usr/bin/env bash
# The main job on built-in data: meta-train a calibration model for a family of simulated piezoresistive
# pressure sensors (closed-form ridge head on meta-learned features), then calibrate 500 new units from
# 3 reference points each and compare with classic calibration from 3 and 10 points. Writes a report with
# plots to reports/<run name>.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CONFIG="${CONFIG:-configs/sensor-pressure.json}"
RUN="${1:-runs/quickstart-pressure}"
if [ -f "$RUN/state.json" ]; then
  .venv/bin/metaedge train --config "$CONFIG" --out "$RUN" --resume   # continue, or nothing to do
else
  .venv/bin/metaedge train --config "$CONFIG" --out "$RUN"
fi
.venv/bin/metaedge eval "$RUN" --tasks 500 --shots 3 --baseline-shots 10 --steps 0,1 \
  --report "reports/$(basename "$RUN")"
