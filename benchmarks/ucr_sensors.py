"""Few-shot classification on the UCR/UEA sensor sets: meta-learned vs nearest neighbour vs fine-tuning.

For each set (BasicMotions, PickupGestureWiimoteZ, ACSF1, PLAID) a ProtoNet with the 1-D conv backbone
is meta-trained on the training split (classes or recordings, see ``metaedge.sdk.tasks.timeseries``),
then scored on 600 held-out episodes (1 and 5 shots) beside 1-NN on raw series and a pretrained
backbone with a new head fitted per episode. Accuracy % ± 95% CI.

    python benchmarks/ucr_sensors.py [--iterations 600] [--episodes 600]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import train_or_resume, write_result

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.evaluate import EvalSettings, evaluate, format_table
from metaedge.sdk.run import Run

SETS = ["ucr-basicmotions", "ucr-wiimote", "ucr-acsf1", "ucr-plaid"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-ucr"))
    args = parser.parse_args()
    results = {}
    for name in args.sets.split(","):
        cfg = TrainConfig(family=name, algo="protonet", shots=2, queries=2, meta_batch=1, width=32,
                          iterations=args.iterations, meta_lr=1e-3, lr_schedule="cosine", log_every=100,
                          checkpoint_every=200)
        path, wall = train_or_resume(cfg, args.runs / name, progress=False)
        report = evaluate(Run.load(path), EvalSettings(tasks=args.episodes, shots=[1, 5], steps=[0],
                                                        pretrain_steps=500))
        print(format_table(report), flush=True)
        results[name] = {"train_wall_seconds": wall, "report": report}
    print("\naccuracy % ± 95% CI per set (meta-learned ProtoNet / 1-NN raw / pretrained + new head)")
    for name, r in results.items():
        for shots in (1, 5):
            cells = []
            for method in ("metaedge protonet", "nearest neighbour (raw inputs)", "transfer (pretrained, new head)"):
                row = next(x for x in r["report"]["rows"] if x["method"] == method and x["shots"] == shots)
                cells.append(f"{100 * row['accuracy']:6.2f} ± {100 * row['accuracy_ci']:.2f}")
            ways = r["report"]["rows"][0]["ways"]
            print(f"{name:18s} {ways}-way {shots}-shot  " + "   ".join(cells))
    print(f"written to {write_result('ucr_sensors', {'results': results})}")


if __name__ == "__main__":
    main()
