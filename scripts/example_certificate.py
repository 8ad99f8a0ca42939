"""Make docs/example-certificate.html (+ .png): one simulated pressure unit, calibrated and checked through the real
chain: runtime adaptation with a journal, `kb ingest`, `kb certificate`, headless Chromium.

Run (from the repository root; trains a small sensor-pressure Meta-SGD bundle first, about a minute)::

    .venv/bin/python scripts/example_certificate.py [--bundle BUNDLE] [--out docs/example-certificate.html]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from metaedge.knowledge import KnowledgeBase
from metaedge.knowledge.certificate import build_certificate, screenshot, write_certificate
from metaedge.runtime.journal import append
from metaedge.runtime.model import Model


def _bundle(work: Path) -> Path:
    from metaedge.export.bundle import export_bundle
    from metaedge.sdk.config import TrainConfig
    from metaedge.sdk.train import train

    run = train(TrainConfig(family="sensor-pressure", algo="metasgd", shots=3, queries=20, meta_batch=16,
                            iterations=600, hidden=[32, 32], activation="tanh", inner_steps=2, seed=0),
                work / "run", progress=False)
    return export_bundle(run, work / "pressure.meb")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, help="A sensor-pressure bundle. [train one]")
    ap.add_argument("--out", type=Path, default=Path("docs/example-certificate.html"))
    args = ap.parse_args()
    from metaedge.sdk.tasks import make_family

    work = Path(tempfile.mkdtemp(prefix="metaedge-cert-"))
    bundle = args.bundle or _bundle(work)
    model = Model.load(bundle)
    family = make_family("sensor-pressure")
    task = family.sample_task(np.random.default_rng(42), shots=3, queries=12)
    t0 = datetime(2026, 11, 2, 8, 30, tzinfo=timezone.utc)
    journal = work / "line-3.jsonl"
    adapted = model.adapt(task.x_support, task.y_support, save=work / "PX-100042.state")
    append(journal, replace(adapted.record("PX-100042"), time=t0.isoformat()))
    for i in range(4):  # weekly in-service checks, 3 reference readings each
        rows = slice(3 * i, 3 * i + 3)
        check = adapted.check(task.x_query[rows], task.y_query[rows])
        append(journal, replace(check, unit="PX-100042", time=(t0 + timedelta(weeks=i + 1)).isoformat()))
    with KnowledgeBase.init(f"sqlite:///{work / 'kb.db'}") as kb:
        if (Path(bundle).parent / "run").is_dir():  # the run beside the bundle: the certificate names it
            kb.register_run(Path(bundle).parent / "run")
        kb.register_bundle(bundle)
        kb.ingest(journal)
        cert = build_certificate(kb, "PX-100042", now=t0 + timedelta(weeks=4, days=1))
    args.out.unlink(missing_ok=True)
    write_certificate(cert, args.out)
    png = args.out.with_suffix(".png")
    screenshot(args.out, png, work / "chromium")
    print(f"{args.out} and {png} written (bundle {bundle})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
