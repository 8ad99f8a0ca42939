#!/usr/bin/env bash
# The main job on built-in data, server to device:
#  1. meta-train a calibration model for a family of simulated piezoresistive pressure sensors (closed-form
#     ridge head on meta-learned features);
#  2. evaluate 3-point calibration of 500 new units against classic calibration from 3 and 10 points
#     (report with plots in reports/<run name>);
#  3. export the bundle (parity-checked against PyTorch);
#  4. on the "device" (numpy + ONNX Runtime only), calibrate one new simulated unit from 3 reference points,
#     print its error next to classic calibration and write a plot (reports/<run name>/device/unit.png);
#  5. close the loop: the unit calibrated with a journal (`metaedge adapt --journal`), the journal ingested into
#     a knowledge base (reports/<run name>/device/kb.db) and the unit shown with its lineage
#     (unit -> adaptation -> bundle -> run -> data hashes).
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
REPORT="reports/$(basename "$RUN")"
.venv/bin/metaedge eval "$RUN" --tasks 500 --shots 3 --baseline-shots 10 --steps 0,1 --report "$REPORT"
rm -rf "$REPORT/model.meb"
.venv/bin/metaedge export "$RUN" -o "$REPORT/model.meb"
FAMILY="$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["family"])' "$CONFIG")"
.venv/bin/python scripts/device_demo.py "$REPORT/model.meb" --family "$FAMILY" --out "$REPORT/device"
DEVICE="$REPORT/device"
KB="sqlite:///$PWD/$DEVICE/kb.db"
rm -f "$DEVICE"/journal.db* "$DEVICE"/kb.db*
.venv/bin/metaedge adapt "$REPORT/model.meb" --support "$DEVICE/support.csv" --out "$DEVICE/unit.state" \
  --journal "$DEVICE/journal.db" --unit SN-0001
.venv/bin/metaedge kb init --db "$KB"
.venv/bin/metaedge kb register "$REPORT/model.meb" --alias champion --db "$KB"
.venv/bin/metaedge kb ingest "$DEVICE/journal.db" --db "$KB"
.venv/bin/metaedge kb show SN-0001 --db "$KB"
.venv/bin/metaedge kb lineage SN-0001 --db "$KB"
