#!/usr/bin/env bash
# Scenario 1 of issue 12, a new production lot, reproduced end to end (about 2.5 minutes on 2 cores):
#  1. meta-train the pressure-sensor bundle on lot A (configs/sensor-pressure.json, as scripts/quickstart.sh) and
#     export it;
#  2. a line makes 300 lot-B units (a second supplier's die: `--family-option lot=B`); each is calibrated on the
#     device runtime from 3 reference points with an SQLite journal, 1 in 10 also audited at 20 points;
#  3. for 0, 30, 100 and 300 units fed back: a knowledge base ingests their journals and `kb update` trains a
#     candidate from the champion on the mixture of lot A and the fleet's audited units, judges it on held-out
#     units (paired differences) and on lot A (5% margin), and promotes it or not;
#  4. every bundle calibrates 500 new lot-B and 500 new lot-A units from 3 points on the device runtime.
# Prints the table, writes benchmarks/results/fleet_update.json and docs/fleet_update.png. Work files go to
# runs/fleet-scenario (delete it to retrain the lot A bundle). Extra arguments go to the benchmark, e.g.
#   bash scripts/fleet_scenario.sh --fed-back 0,300 --new-units 200
# The same update from the command line, on a knowledge base that holds the champion and ingested journals:
#   metaedge kb update --db sqlite:///kb.db --from champion --out updates/next
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -c "import sqlalchemy, alembic" 2>/dev/null || .venv/bin/python -m pip install -q -e ".[kb]"
cd benchmarks
../.venv/bin/python fleet_update.py "$@"
