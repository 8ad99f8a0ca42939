"""``metaedge control``: closed-loop episodes of a dynamics bundle's controller on new simulated units.

The bundle's family is rebuilt from ``manifest.family`` (``make_family``), so the units are drawn from the same
documented ranges the model was meta-trained on, but are new (their own seed). Every controller meets the same
units, start states and process noise; an episode's return is minus the sum over its steps of the bundle's
quadratic cost ``(s_t - target)^T diag(q) (s_t - target) + a_t^T diag(r) a_t`` (angle errors wrapped) at the states
actually reached.

Before its episode each unit makes a commissioning run (``explore`` steps, default the bundle's window M): the
family's smoothed random actions from a start state, what a drive does before it has a model of its unit (servo
drives' inertia identification, a thermal chamber's step test). Every controller observes the same run; only the
learners use it. With ``explore=0`` the adapted controller starts cold and learns within the episode.
Controllers:

- ``adapted``: :class:`~metaedge.runtime.control.Controller`, re-adapting from its last ``window`` transitions every
  ``adapt_every`` steps (the device's loop), the commissioning run included;
- ``meta``: the same planner with the meta-parameters, never adapted;
- ``oracle``: the same planner on the true one-step change :meth:`System.delta` of the unit (noise-free).

``gap_closed = (adapted - meta) / (oracle - meta)`` on the mean returns, with a paired bootstrap CI over units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import InputError
from .runtime.control import Controller, Planner, wrap_angle
from .runtime.manifest import Control
from .runtime.model import Model

#: controllers of the report, in order
CONTROLLERS = ("adapted", "meta", "oracle")
#: an episode's final fifth counts as held when the mean absolute error of state 0 there is below this
HOLD_TOLERANCE = 0.1


class Policy(Protocol):
    """What an episode drives: ``act`` plans, ``observe`` learns from the transition that followed."""

    def act(self, state: np.ndarray) -> np.ndarray: ...

    def observe(self, state: np.ndarray, action: np.ndarray, next_state: np.ndarray) -> Any: ...


class OracleController:
    """The bundle's planner on the unit's true dynamics (``System.delta``, noise-free): the best the planner can do."""

    def __init__(self, spec: Control, system: Any, params: np.ndarray) -> None:
        self.planner, self.system, self.params = Planner(spec), system, np.asarray(params).reshape(1, -1)
        s = spec.state_dim
        self._dynamics = lambda x: system.delta(np.repeat(self.params, len(x), 0), x[:, :s].astype(np.float64),
                                                x[:, s:].astype(np.float64)).astype(np.float32)

    def act(self, state: np.ndarray) -> np.ndarray:
        return self.planner.plan(np.asarray(state, np.float32), self._dynamics).action

    def observe(self, state: np.ndarray, action: np.ndarray, next_state: np.ndarray) -> None:
        return None


@dataclass(frozen=True)
class Trajectory:
    """One closed-loop episode: states ``(T + 1, S)``, actions ``(T, A)`` (as applied, clipped), costs ``(T,)``."""

    states: np.ndarray
    actions: np.ndarray
    costs: np.ndarray

    @property
    def ret(self) -> float:
        """The return: minus the summed cost."""
        return -float(self.costs.sum())

    def held(self, spec: Control) -> bool:
        """Whether the last fifth of the episode stayed within :data:`HOLD_TOLERANCE` of the target in state 0."""
        tail = self.states[1:][-max(1, len(self.costs) // 5):]
        return bool(np.mean(np.abs(state_error(spec, tail)[:, 0])) < HOLD_TOLERANCE)


def _finite(value: float) -> float | None:
    """``value``, or None (JSON null) where it is undefined (a CI of one episode, no gap to close)."""
    return value if np.isfinite(value) else None


def state_error(spec: Control, states: np.ndarray) -> np.ndarray:
    """``(n, S)`` states minus the target, angle dims wrapped to ``[-pi, pi)``."""
    e = np.asarray(states, np.float64) - np.asarray(spec.target)
    if spec.wrap:
        e[:, list(spec.wrap)] = wrap_angle(e[:, list(spec.wrap)])
    return e


def episode(policy: Policy, spec: Control, system: Any, params: np.ndarray, start: np.ndarray, steps: int,
            rng: np.random.Generator) -> Trajectory:
    """Drive ``policy`` for ``steps`` control periods on the unit ``params`` ``(P,)`` from ``start`` ``(S,)``, with
    the system's process noise from ``rng``."""
    p = np.asarray(params, np.float64).reshape(1, -1)
    s = np.asarray(start, np.float64).reshape(1, -1)
    states, actions = [s[0]], []
    for _ in range(steps):
        a = system.clip(np.asarray(policy.act(s[0]), np.float64).reshape(1, -1))
        nxt = system.step(p, s, a, rng)
        policy.observe(s[0], a[0], nxt[0])
        states.append(nxt[0])
        actions.append(a[0])
        s = nxt
    states_a, actions_a = np.array(states), np.array(actions)
    e = state_error(spec, states_a[1:])
    costs = (e**2) @ np.asarray(spec.q) + (actions_a**2) @ np.asarray(spec.r)
    return Trajectory(states_a, actions_a, costs)


class Replay:
    """A scripted policy: the actions ``(T, A)`` in order (the commissioning run's exploration)."""

    def __init__(self, actions: np.ndarray) -> None:
        self.actions, self.t = actions, 0

    def act(self, state: np.ndarray) -> np.ndarray:
        self.t += 1
        return self.actions[self.t - 1]

    def observe(self, state: np.ndarray, action: np.ndarray, next_state: np.ndarray) -> None:
        return None


def commission(family: Any, spec: Control, params: np.ndarray, steps: int, rng: np.random.Generator) -> Trajectory:
    """A unit's commissioning run: ``steps`` of the family's smoothed random exploration from a start state, with
    process noise, all from ``rng``."""
    system = family.system
    start = system.initial_state(rng, 1)[0]
    return episode(Replay(family.explore(rng, 1, steps)[:, 0]), spec, system, params, start, steps, rng)


@dataclass(frozen=True)
class Summary:
    """One controller over the episodes: mean return, the half-width of its 95% CI, and how many held the target."""

    name: str
    mean: float
    ci95: float
    held: int
    returns: tuple[float, ...]


@dataclass(frozen=True)
class ControlReport:
    """The closed-loop comparison (:func:`evaluate_control`)."""

    family: str
    episodes: int
    steps: int
    seed: int
    spec: Control
    #: steps of each unit's commissioning run before its episode (0: the learners start cold)
    explore: int
    summaries: tuple[Summary, ...]
    #: the first unit's trajectory under each controller (for ``--plot``)
    first: dict[str, Trajectory]

    def summary(self, name: str) -> Summary:
        return next(s for s in self.summaries if s.name == name)

    def gap_closed(self, name: str = "adapted") -> float:
        """``(name - meta) / (oracle - meta)`` on the mean returns (NaN when meta already matches the oracle)."""
        meta, oracle = self.summary("meta").mean, self.summary("oracle").mean
        if abs(oracle - meta) < 1e-12:
            return float("nan")
        return (self.summary(name).mean - meta) / (oracle - meta)

    def gap_closed_ci(self, name: str = "adapted", draws: int = 2000, seed: int = 0) -> tuple[float, float]:
        """95% percentile-bootstrap CI of :meth:`gap_closed` over units: every controller ran on the same units, so
        units are resampled together (a paired bootstrap); NaN where it is undefined."""
        r = {k: np.asarray(self.summary(k).returns, np.float64) for k in (name, "meta", "oracle")}
        n = len(r["meta"])
        if n < 2:
            return float("nan"), float("nan")
        idx = np.random.default_rng(seed).integers(0, n, size=(draws, n))
        meta, oracle, ours = (r[k][idx].mean(1) for k in ("meta", "oracle", name))
        den = oracle - meta
        ok = np.abs(den) > 1e-12
        if ok.sum() < draws // 2:
            return float("nan"), float("nan")
        ratio = (ours[ok] - meta[ok]) / den[ok]
        lo, hi = np.percentile(ratio, [2.5, 97.5])
        return float(lo), float(hi)

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.gap_closed_ci()
        return {
            "family": self.family, "episodes": self.episodes, "steps": self.steps, "seed": self.seed,
            "explore": self.explore,
            "dt": self.spec.dt, "window": self.spec.window, "adapt_every": self.spec.adapt_every,
            "planner": self.spec.planner, "candidates": self.spec.candidates, "horizon": self.spec.horizon,
            "controllers": {s.name: {"mean_return": s.mean, "ci95": _finite(s.ci95), "held": s.held,
                                     "returns": list(s.returns)} for s in self.summaries},
            "gap_closed": _finite(self.gap_closed()),
            "gap_closed_ci95": [_finite(lo), _finite(hi)],
        }

    def table(self) -> str:
        """The report as text: one row per controller, then gap_closed."""
        lines = [f"{self.family}: {self.episodes} new units x {self.steps} steps ({self.steps * self.spec.dt:g} s), "
                 f"{self.spec.planner} {self.spec.candidates} x {self.spec.horizon}, window {self.spec.window}, "
                 f"re-adapt every {self.spec.adapt_every}, after a commissioning run of {self.explore} steps",
                 f"{'controller':<10} {'mean return':>12} {'95% CI':>10} {'held target':>12}"]
        for s in self.summaries:
            ci = f"+-{s.ci95:.2f}" if np.isfinite(s.ci95) else "n/a"
            lines.append(f"{s.name:<10} {s.mean:>12.2f} {ci:>10} "
                         f"{f'{s.held}/{self.episodes}':>12}")
        lo, hi = self.gap_closed_ci()
        ci = f"{lo:.2f} to {hi:.2f}" if np.isfinite(lo) else "n/a"
        lines.append(f"gap_closed = (adapted - meta) / (oracle - meta) = {self.gap_closed():.3f} "
                     f"(95% paired bootstrap CI over units: {ci})")
        return "\n".join(lines)


def dynamics_family(model: Model) -> Any:
    """The bundle's dynamics family rebuilt from ``manifest.family``; :class:`InputError` for a bundle without a
    control part or of another kind of family."""
    from .sdk.tasks import make_family
    from .sdk.tasks.dynamics import DynamicsFamily

    m = model.bundle.manifest
    if m.control is None:
        raise InputError(f"{model.bundle.path} has no control part (it was not trained on a dynamics family); "
                         "train with e.g. `metaedge train --config configs/pendulum-dynamics.json` and export that")
    name = m.family.get("name")
    family = make_family(str(name), **DynamicsFamily.options(m.family))
    if not isinstance(family, DynamicsFamily):
        raise InputError(f"{model.bundle.path}: family {name!r} simulates no plant, so `metaedge control` cannot "
                         "run it; use a bundle of a dynamics family (metaedge families)")
    return family


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% CI."""
    from .sdk.evaluate.stats import mean_ci as _mean_ci

    return _mean_ci(np.asarray(values))


#: builds one episode's policy from (model, spec, system, unit params)
PolicyFactory = Callable[[Model, Control, Any, np.ndarray], Policy]


def default_policies() -> dict[str, PolicyFactory]:
    """The three controllers of :data:`CONTROLLERS`."""
    return {
        "adapted": lambda model, spec, system, params: Controller(model, "adapted"),
        "meta": lambda model, spec, system, params: Controller(model, "meta"),
        "oracle": lambda model, spec, system, params: OracleController(spec, system, params),
    }


def evaluate_control(model: Model, episodes: int = 20, steps: int | None = None, seed: int = 0,
                     policies: dict[str, PolicyFactory] | None = None,
                     on_episode: Callable[[int], None] | None = None, explore: int | None = None) -> ControlReport:
    """Run ``episodes`` new units (drawn from generator ``seed``) for ``steps`` control periods (None: the family's
    episode length) under each of ``policies`` (default :func:`default_policies`; keys ``meta`` and ``oracle``
    are needed for ``gap_closed``), every one on the same units, commissioning runs (``explore`` steps, None: the
    bundle's window M; see the module docstring), start states and noise."""
    if episodes < 1:
        raise InputError(f"--episodes must be at least 1, got {episodes}")
    family = dynamics_family(model)
    spec = model.bundle.manifest.control
    steps = family.episode_steps if steps is None else int(steps)
    if steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    explore = spec.window if explore is None else int(explore)
    if explore < 0:
        raise InputError(f"--explore must be 0 or more steps, got {explore}")
    system = family.system
    policies = default_policies() if policies is None else policies
    # unit i comes from its own generator, so the first units are the same whatever --episodes says
    units = [np.random.default_rng([seed, 7, i]) for i in range(episodes)]
    params = [system.sample_params(g, 1)[0] for g in units]
    starts = [system.initial_state(g, 1)[0] for g in units]
    returns: dict[str, list[float]] = {name: [] for name in policies}
    held: dict[str, int] = dict.fromkeys(policies, 0)
    first: dict[str, Trajectory] = {}
    for i in range(episodes):
        run = commission(family, spec, params[i], explore, np.random.default_rng([seed, 13, i])) if explore else None
        for name, make in policies.items():
            policy = make(model, spec, system, params[i])
            if run is not None:
                for s, a, s1 in zip(run.states[:-1], run.actions, run.states[1:]):
                    policy.observe(s, a, s1)
            noise = np.random.default_rng([seed, 11, i])  # the same noise for every controller
            traj = episode(policy, spec, system, params[i], starts[i], steps, noise)
            returns[name].append(traj.ret)
            held[name] += traj.held(spec)
            if i == 0:
                first[name] = traj
        if on_episode is not None:
            on_episode(i)
    summaries = tuple(Summary(name, *mean_ci(r), held[name], tuple(r)) for name, r in returns.items())
    return ControlReport(family.name, episodes, steps, seed, spec, explore, summaries, first)


def plot_trajectories(report: ControlReport, names: Sequence[str], units: Sequence[str], action_names: Sequence[str],
                      path: Path) -> None:
    """The first unit's states and actions over time under each controller, one panel per state and action, to
    ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = report.spec
    wrapped = set(spec.wrap)  # angles: the wrapped error from the target, so the top does not jump at +-pi
    panels = [(f"{n} - {spec.target[j]:.3g}, wrapped" if j in wrapped else n) + (f" [{u}]" if u else "")
              for j, (n, u) in enumerate(zip(names, units))] + list(action_names)
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.2 * len(panels)), sharex=True)
    t = np.arange(report.steps + 1) * spec.dt
    for name, traj in report.first.items():
        shown = np.where([j in wrapped for j in range(spec.state_dim)], state_error(spec, traj.states), traj.states)
        for j in range(spec.state_dim):
            axes[j].plot(t, shown[:, j], label=f"{name} (return {traj.ret:.1f})")
        for j in range(spec.action_dim):
            axes[spec.state_dim + j].step(t[:-1], traj.actions[:, j], where="post", label=name)
    for j in range(spec.state_dim):
        axes[j].axhline(0.0 if j in wrapped else spec.target[j], color="0.6", ls="--", lw=0.8)
    for ax, title in zip(axes, panels):
        ax.set_ylabel(title)
    axes[0].legend(fontsize=8)
    axes[-1].set_xlabel("time [s]")
    fig.suptitle(f"{report.family}: one new unit, three controllers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
