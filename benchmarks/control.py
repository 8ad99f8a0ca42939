"""Model-based adaptive control (issue 14, figures 1 and 2's Python rows).

For each dynamics family it meta-trains (or resumes) the run of ``configs/<family>.json``, exports it, and then:

1. **Figure 1**: closed-loop episodes on ``--units`` new units (seed 1234, never seen in training), each after a
   commissioning run of ``--explore`` steps (default M; the family's smoothed random actions), every controller
   on the same units, commissioning runs, start states and process noise
   (:func:`metaedge.control_cli.evaluate_control`), mean return with a 95% CI for

   - ``adapted``: the runtime's :class:`~metaedge.runtime.control.Controller`, adapted (the bundle's guarded
     adapt, from theta0) on its last M = ``window`` transitions every ``adapt_every`` steps, the commissioning run
     included; with ``--explore 0`` the meta-model plans until its first adaptation;
   - ``meta``: the same planner with the meta-parameters, never adapted;
   - ``scratch``: the same loop, with a network of the bundle's architecture (hidden widths, activation, skip path)
     trained from random initialisation on the same window at the same times (Adam, lr 1e-2, full batch, up to 500
     steps, early stopping with patience 50 on a quarter of the window held out, the best weights restored), its
     inputs and targets standardised on the window itself; until its first window is full it explores with the
     family's smoothed random actions (it has no model to plan with);
   - ``oracle``: the same planner on the true one-step change.

   ``gap_closed = (adapted - meta) / (oracle - meta)``.
2. **Figure 2 (Python rows)**: one control step (one adaptation on M transitions, amortised over every K steps,
   plus one plan: CEM rounds x N candidates x H horizon model calls) with the runtime's ``native`` (C library via
   ctypes, numpy around it) and ``onnxruntime`` backends: medians over ``--repeats`` of each part.

    python benchmarks/control.py [--families pendulum-dynamics,dc-motor-dynamics] [--units 100] [--repeats 50]
        [--explore M]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import train_or_resume, write_result

from metaedge.control_cli import default_policies, dynamics_family, evaluate_control
from metaedge.export.bundle import export_bundle
from metaedge.runtime.control import Controller, Planner, wrap_angle
from metaedge.runtime.manifest import Control
from metaedge.runtime.model import Model
from metaedge.sdk.config import TrainConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class ScratchController:
    """MPC with a network trained from random initialisation on the unit's last ``window`` transitions, every
    ``adapt_every`` steps (see the module docstring); explores with smoothed random actions until then."""

    def __init__(self, spec: Control, family: Any, hidden: list[int], activation: str, skip: bool, seed: int) -> None:
        self.spec, self.family = spec, family
        self.hidden, self.act_fn, self.skip = hidden, ACTIVATIONS[activation], skip
        self.planner = Planner(spec)
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.xs: deque[np.ndarray] = deque(maxlen=spec.window)
        self.ys: deque[np.ndarray] = deque(maxlen=spec.window)
        self.net: tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray | None, tuple[np.ndarray, ...]] | None = None
        self.steps = 0
        self._explore = family.explore(self.rng, 1, 10_000)[:, 0]

    def _forward(self, layers, skip, x):
        h = x
        for i, (w, b) in enumerate(layers):
            h = h @ w.T + b
            if i < len(layers) - 1:
                h = self.act_fn(h) if isinstance(h, torch.Tensor) else _np_act(self.act_fn, h)
        return h + (x @ skip.T if skip is not None else 0)

    def _train(self) -> None:
        x = np.stack(self.xs).astype(np.float64)
        y = np.stack(self.ys).astype(np.float64)
        xm, xsd = x.mean(0), np.where(x.std(0) > 1e-9, x.std(0), 1.0)
        ym, ysd = y.mean(0), np.where(y.std(0) > 1e-9, y.std(0), 1.0)
        xt = torch.tensor((x - xm) / xsd, dtype=torch.float32)
        yt = torch.tensor((y - ym) / ysd, dtype=torch.float32)
        n_val = max(1, len(x) // 4)
        order = torch.randperm(len(x), generator=self.gen)
        val, fit = order[:n_val], order[n_val:]
        sizes = [x.shape[1], *self.hidden, y.shape[1]]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):  # PyTorch's default Linear initialisation
            bound = 1 / np.sqrt(a)
            w = (torch.rand(b, a, generator=self.gen) * 2 - 1) * bound
            layers.append((w.requires_grad_(), ((torch.rand(b, generator=self.gen) * 2 - 1) * bound).requires_grad_()))
        skip = torch.zeros(y.shape[1], x.shape[1], requires_grad=True) if self.skip else None
        params = [p for layer in layers for p in layer] + ([skip] if skip is not None else [])
        opt = torch.optim.Adam(params, lr=1e-2)
        best, best_state, since = np.inf, None, 0
        for _ in range(500):
            opt.zero_grad()
            loss = ((self._forward(layers, skip, xt[fit]) - yt[fit]) ** 2).mean()
            loss.backward()
            opt.step()
            with torch.no_grad():
                v = float(((self._forward(layers, skip, xt[val]) - yt[val]) ** 2).mean())
            if v < best - 1e-6:
                best, since = v, 0
                best_state = ([(w.detach().numpy().copy(), b.detach().numpy().copy()) for w, b in layers],
                              None if skip is None else skip.detach().numpy().copy())
            else:
                since += 1
                if since >= 50:
                    break
        self.net = (*best_state, (xm, xsd, ym, ysd))

    def dynamics(self, x: np.ndarray) -> np.ndarray:
        layers, skip, (xm, xsd, ym, ysd) = self.net
        z = (x.astype(np.float64) - xm) / xsd
        return (self._forward(layers, skip, z) * ysd + ym).astype(np.float32)

    def act(self, state: np.ndarray) -> np.ndarray:
        if self.net is None:
            return self._explore[self.steps % len(self._explore)]
        return self.planner.plan(np.asarray(state, np.float32), self.dynamics).action

    def observe(self, state: np.ndarray, action: np.ndarray, next_state: np.ndarray) -> None:
        delta = np.asarray(next_state - state, np.float32)
        if self.spec.wrap:
            delta[list(self.spec.wrap)] = wrap_angle(delta[list(self.spec.wrap)])
        self.xs.append(np.concatenate([state, action]).astype(np.float32))
        self.ys.append(delta)
        self.steps += 1
        if self.steps % self.spec.adapt_every == 0 and len(self.xs) == self.spec.window:
            self._train()


def _np_act(fn, h: np.ndarray) -> np.ndarray:
    return np.tanh(h) if fn is torch.tanh else np.maximum(h, 0)


def figure1(model: Model, run_config: dict[str, Any], units: int, seed: int, explore: int | None) -> dict[str, Any]:
    family = dynamics_family(model)
    train = run_config["train"]
    count = iter(range(10**9))

    def scratch(model, spec, system, params):
        return ScratchController(spec, family, train["hidden"], train["activation"], train["skip"], next(count))

    base = default_policies()
    policies = {"adapted": base["adapted"], "meta": base["meta"], "scratch": scratch, "oracle": base["oracle"]}
    t0 = time.perf_counter()
    report = evaluate_control(model, episodes=units, seed=seed, policies=policies, explore=explore,
                              on_episode=lambda i: print(f"  unit {i + 1}/{units}", flush=True) if i % 10 == 9 else 0)
    out = report.to_dict()  # with every unit's return per controller
    out["gap_closed_scratch"] = report.gap_closed("scratch")
    # paired: the per-unit share of the gap is noisy where meta ~ oracle, so the CI is on the paired differences
    ret = {s.name: np.asarray(s.returns) for s in report.summaries}
    diff = ret["adapted"] - ret["meta"]
    out["adapted_minus_meta"] = {"mean": float(diff.mean()), "ci95": float(1.96 * diff.std(ddof=1) / np.sqrt(units))}
    out["wall_s"] = time.perf_counter() - t0
    return out


def figure2(bundle: Path, repeats: int, seed: int) -> dict[str, Any]:
    rows = {}
    for backend in ("native", "onnxruntime"):
        model = Model.load(bundle, backend=backend)
        spec = model.bundle.manifest.control
        family = dynamics_family(model)
        batch = family.sample_batch(np.random.default_rng(seed), 1, spec.window, 1)
        xs, ys = batch.x_support[0], batch.y_support[0]
        state = xs[-1, :spec.state_dim]
        ctl = Controller(model, "adapted")
        model.adapt(xs, ys)  # warm-up
        ctl.act(state)
        adapt_ms, plan_ms = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            ctl.adapted = model.adapt(xs, ys)
            adapt_ms.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            ctl.act(state)
            plan_ms.append((time.perf_counter() - t) * 1e3)
        a, p = float(np.median(adapt_ms)), float(np.median(plan_ms))
        rows[backend] = {"adapt_ms": a, "plan_ms": p, "step_ms": p + a / spec.adapt_every,
                         "model_calls_per_plan": spec.iterations * spec.horizon}
    return {"N": spec.candidates, "H": spec.horizon, "iterations": spec.iterations, "M": spec.window,
            "K": spec.adapt_every, "repeats": repeats, "backends": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="pendulum-dynamics,dc-motor-dynamics")
    ap.add_argument("--units", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--explore", type=int, help="Commissioning steps before each episode [the bundle's window M].")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-control"))
    ap.add_argument("--configs", type=Path, default=CONFIGS, help="Folder of the <family>.json configs.")
    ap.add_argument("--out", default="control", help="Results are written to results/<out>_<family>.json.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.families.split(","):
        cfg = TrainConfig.from_dict(json.loads((args.configs / f"{name}.json").read_text()))
        run, train_s = train_or_resume(cfg, args.work / name, progress=False)
        bundle = args.work / f"{name}.bundle"
        if not bundle.exists():
            export_bundle(run, bundle)
        print(f"{name}: trained in {train_s:.0f} s; closed loop on {args.units} units", flush=True)
        model = Model.load(bundle)
        fig1 = figure1(model, json.loads((run / "config.json").read_text()), args.units, args.seed, args.explore)
        fig2 = figure2(bundle, args.repeats, args.seed)
        result = {"family": name, "units": args.units, "seed": args.seed, "algo": cfg.algo, "train_s": train_s,
                  "figure1": fig1, "figure2": fig2}
        c = fig1["controllers"]
        print("  " + "  ".join(f"{k} {v['mean_return']:.2f}+-{v['ci95']:.2f} (held {v['held']})" for k, v in c.items()))
        print(f"  gap_closed {fig1['gap_closed']:.3f} (scratch {fig1['gap_closed_scratch']:.3f}); step ms: " +
              ", ".join(f"{b} {r['step_ms']:.2f}" for b, r in fig2["backends"].items()), flush=True)
        print(f"results written to {write_result(f'{args.out}_{name}', result)}")


if __name__ == "__main__":
    main()
