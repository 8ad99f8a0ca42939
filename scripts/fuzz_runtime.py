"""Long fuzz run of the runtime's readers of untrusted files (the targets of tests/fuzzing.py).

Each target (bundle zips, bundle directories with manifest mutations, adapted states, CSV files) runs for
``--examples`` hypothesis-generated inputs. Unlike the test, a finding does not stop the run: every exception
other than the project's own error types is recorded under its signature (type and innermost project frame), and
the run reports executions, distinct failures and one example of each. Exit status 1 when anything was found.

    python scripts/fuzz_runtime.py --examples 5000              # all targets, a freshly trained small bundle
    python scripts/fuzz_runtime.py --examples 200 --target csv --bundle runs/ntc.meb
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fuzzing import TARGETS, make_seeds  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def small_bundle(root: Path) -> Path:
    """The bundle of the tests' ``small_bundle`` fixture (20 meta-iterations of a 16-16 MLP, no parity check)."""
    from metaedge.export.bundle import export_bundle
    from metaedge.sdk.train import TrainConfig, train

    run = train(TrainConfig(family="sensor-pressure", algo="metasgd", shots=3, queries=5, meta_batch=4,
                            iterations=20, hidden=[16, 16], activation="tanh", inner_steps=2), root / "run",
                progress=False)
    return export_bundle(run, root / "model.meb", check=False)


def signature(e: BaseException) -> str:
    """``Type at file:line`` of the innermost frame in metaedge's own code, then the innermost frame."""
    frames = traceback.extract_tb(e.__traceback__)
    own = [f for f in frames if f.filename.startswith(str(ROOT)) and not f.filename.startswith(
        tuple(str(ROOT / d) for d in (".venv", "tests", "scripts")))]
    where = [f"{Path(f.filename).name}:{f.lineno}" for f in ([own[-1]] if own else []) + [frames[-1]]]
    return f"{type(e).__name__} at {' / '.join(dict.fromkeys(where))}"


def fuzz(name: str, seeds, examples: int, seed: int) -> dict:
    """Run one target for ``examples`` inputs; executions, seconds and findings by signature."""
    strategy, target = TARGETS[name]
    executions, findings = [0], {}

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def loop(data):
        value = data.draw(strategy(seeds))
        executions[0] += 1
        try:
            target(seeds, value)
        except Exception as e:  # noqa: BLE001 - every other exception is what this run looks for
            found = findings.setdefault(signature(e), {"count": 0, "message": str(e)[:300],
                                                       "example": repr(value)[:300]})
            found["count"] += 1

    started = time.perf_counter()
    loop()
    return {"target": name, "executions": executions[0], "seconds": round(time.perf_counter() - started, 1),
            "distinct_failures": len(findings), "findings": findings}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000, help="inputs per target")
    parser.add_argument("--target", action="append", choices=list(TARGETS), help="repeatable; default: all")
    parser.add_argument("--bundle", type=Path, help="bundle directory to mutate (default: train a small one)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (a different seed, different inputs)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuzz-runtime-") as work:
        bundle = args.bundle or small_bundle(Path(work))
        seeds = make_seeds(bundle, Path(work))
        results = [fuzz(name, seeds, args.examples, args.seed) for name in args.target or TARGETS]
    for r in results:
        print(f"{r['target']:17s} {r['executions']:7d} executions {r['seconds']:7.1f} s  "
              f"{r['distinct_failures']} distinct failures")
        for sig, f in r["findings"].items():
            print(f"    {f['count']:6d} x {sig}: {f['message'][:150]}\n             e.g. {f['example'][:150]}")
    total = sum(r["executions"] for r in results)
    found = sum(r["distinct_failures"] for r in results)
    print(f"total: {total} executions, {found} distinct failures")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
