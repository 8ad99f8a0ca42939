"""Model-predictive control with a learned dynamics model: seeded random shooting and CEM, torch-free.

The planner is what a device runs between adaptations: it rolls candidate action sequences through a dynamics
function ``f(concat(state, action)) -> state change`` (the adapted bundle, the meta-model or the true physics) and
takes the first action of the cheapest. What it does is fixed by the bundle's :class:`~metaedge.runtime.manifest.
Control` part, and its random numbers come from a counter-based generator (splitmix64 of the seed and a
counter), so the C library's ``me_plan`` draws the same numbers in the same order and plans the same actions.

The draws of plan call ``k`` (counted from the planner's creation or last :meth:`Planner.reset`) and CEM round
``i`` start at counter ``(k * iterations + i) * 2 * N * H * A`` (``N`` candidates, ``H`` horizon, ``A`` action
dims); draw ``j`` is element ``j`` of the row-major ``(N, H, A)`` action array. Random shooting maps uniform ``j``
to ``low + (high - low) * u``; CEM forms normal ``j`` from uniforms ``2j`` and ``2j + 1`` by Box-Muller in double
precision. Rollouts run in float32 (the state dims in ``wrap`` are wrapped to ``[-pi, pi)`` after every step),
costs accumulate in float64.

:class:`Controller` is the loop around the planner on a device: it plans with the bundle's model, keeps the unit's
last transitions and re-adapts the model from them on the bundle's schedule.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from ..errors import InputError
from .manifest import Control
from .model import Adapted, Model

#: ``f(x)`` with ``x`` ``(N, state_dim + action_dim)`` float32 -> ``(N, state_dim)`` state changes
Dynamics = Callable[[np.ndarray], np.ndarray]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(seed: int, counters: np.ndarray) -> np.ndarray:
    """Output ``c`` of the splitmix64 generator started at ``seed``, for each counter ``c`` (uint64 arrays).

    Counter 0 is the generator's first output (``0xE220A8397B1DCDAF`` for seed 0).
    """
    c = np.asarray(counters, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed % 2**64) + (c + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, start: int, n: int) -> np.ndarray:
    """``(n,)`` float64 uniforms in ``[0, 1)`` from counters ``start .. start + n - 1``: the top 24 bits of each
    output times ``2**-24``, exact in float32 too."""
    bits = splitmix64(seed, np.arange(start, start + n, dtype=np.uint64)) >> np.uint64(40)
    return bits.astype(np.float64) * 2.0**-24


def normals(seed: int, start: int, n: int) -> np.ndarray:
    """``(n,)`` float64 standard normals: normal ``j`` is Box-Muller of uniforms ``start + 2j``, ``start + 2j + 1``."""
    u = uniforms(seed, start, 2 * n).reshape(n, 2)
    return np.sqrt(-2.0 * np.log(1.0 - u[:, 0])) * np.cos(2.0 * np.pi * u[:, 1])


def wrap_angle(e: np.ndarray) -> np.ndarray:
    """Angles to ``[-pi, pi)`` as ``e - 2 pi floor((e + pi) / (2 pi))`` (the C planner uses the same formula)."""
    two_pi = np.float32(2.0 * np.pi)
    return e - two_pi * np.floor((e + np.float32(np.pi)) / two_pi)


def rollout_costs(spec: Control, state: np.ndarray, actions: np.ndarray, dynamics: Dynamics) -> np.ndarray:
    """Predicted cost of each action sequence from ``state``.

    Args:
        spec: the bundle's control part (cost weights, target, wrapped dims).
        state: ``(state_dim,)`` the current state.
        actions: ``(N, H, action_dim)`` candidate sequences (already inside the action bounds).
        dynamics: the model of the state change.

    Returns:
        ``(N,)`` float64 costs ``sum_t e_t^T diag(q) e_t + a_t^T diag(r) a_t`` over the predicted states.
    """
    n, horizon, _ = actions.shape
    q, r = np.asarray(spec.q), np.asarray(spec.r)
    target = np.asarray(spec.target, dtype=np.float32)
    wrap = list(spec.wrap)
    s = np.tile(np.asarray(state, dtype=np.float32), (n, 1))
    costs = np.zeros(n)
    for t in range(horizon):
        a = actions[:, t].astype(np.float32)
        delta = np.asarray(dynamics(np.concatenate([s, a], axis=1)), dtype=np.float32)
        s = s + delta.reshape(s.shape)
        e = s - target
        if wrap:  # angles stay in [-pi, pi), as the model saw them in training
            s[:, wrap] = wrap_angle(s[:, wrap])
            e[:, wrap] = wrap_angle(e[:, wrap])
        costs += (e.astype(np.float64) ** 2) @ q + (a.astype(np.float64) ** 2) @ r
    return costs


@dataclass(frozen=True)
class Plan:
    """One planning result.

    Attributes:
        action: ``(action_dim,)`` the action to apply now.
        sequence: ``(H, action_dim)`` the planned sequence (the best candidate, or CEM's final mean).
        cost: the lowest predicted cost among the last round's candidates.
    """

    action: np.ndarray
    sequence: np.ndarray
    cost: float


class Planner:
    """Random shooting or CEM as the bundle's :class:`Control` part states; CEM warm-starts from its last mean
    shifted by one step."""

    def __init__(self, spec: Control) -> None:
        self.spec = spec
        self.low = np.asarray(spec.action_low, dtype=np.float32)
        self.high = np.asarray(spec.action_high, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Start over: the call counter at 0 and CEM's mean at the middle of the action range."""
        self.calls = 0
        self._mean = np.tile((self.low + self.high) / np.float32(2), (self.spec.horizon, 1))

    def plan(self, state: np.ndarray, dynamics: Dynamics) -> Plan:
        """The next action from ``state`` (``(state_dim,)``) under ``dynamics``."""
        spec = self.spec
        n, horizon, a_dim = spec.candidates, spec.horizon, spec.action_dim
        draws = n * horizon * a_dim
        base = self.calls * spec.iterations * 2 * draws
        self.calls += 1
        if spec.planner == "random-shooting":
            u = uniforms(spec.seed, base, draws).astype(np.float32).reshape(n, horizon, a_dim)
            actions = self.low + (self.high - self.low) * u
            costs = rollout_costs(spec, state, actions, dynamics)
            best = int(np.argmin(costs))
            return Plan(actions[best, 0].copy(), actions[best].copy(), float(costs[best]))
        mean = self._mean
        std = np.tile((self.high - self.low) / np.float32(2), (horizon, 1))
        for i in range(spec.iterations):
            g = normals(spec.seed, base + i * 2 * draws, draws).astype(np.float32).reshape(n, horizon, a_dim)
            actions = np.clip(mean + std * g, self.low, self.high)
            costs = rollout_costs(spec, state, actions, dynamics)
            elite = actions[np.argsort(costs, kind="stable")[: spec.elites]]
            mean, std = elite.mean(axis=0), elite.std(axis=0)
        self._mean = np.concatenate([mean[1:], ((self.low + self.high) / np.float32(2))[None]], axis=0)
        return Plan(mean[0].copy(), mean.copy(), float(costs.min()))


#: how a :class:`Controller` models the unit: re-adapted from its own transitions, or the meta-parameters alone
Mode = Literal["adapted", "meta"]
MODES: tuple[str, ...] = get_args(Mode)


class Controller:
    """The on-device control loop over a dynamics bundle: plan with the model, observe, re-adapt on a schedule.

    ``act(state)`` plans the next action with the current model (the meta-parameters ``theta0`` until the first
    adaptation); ``observe(state, action, next_state)`` keeps the last ``window`` transitions and, in mode
    ``adapted``, re-adapts the model from them (:meth:`Model.adapt`, guarded, always from ``theta0``) every
    ``adapt_every`` (K) observations: the first time after K observations, from the K transitions kept then, and
    from the last ``window`` (M) once M are kept, so a unit's own model takes over after K steps rather than M.
    Mode ``meta`` never adapts (the baseline). Every setting comes from the bundle's ``manifest.control``.

    Attributes:
        adapted: the model the planner uses now (``theta0`` before any adaptation).
        adaptations: how many times it re-adapted since the last :meth:`reset`.
        steps: observations since the last :meth:`reset`.
    """

    def __init__(self, model: Model, mode: Mode = "adapted") -> None:
        spec = model.bundle.manifest.control
        if spec is None:
            raise InputError(f"{model.bundle.path} has no control part, so it cannot drive a controller; train on a "
                             "dynamics family (e.g. --config configs/pendulum-dynamics.json) and export again")
        if mode not in MODES:
            raise InputError(f"controller mode must be one of {', '.join(MODES)}, got {mode!r}")
        m = model.bundle.manifest
        if m.classification or m.input.shape != (spec.state_dim + spec.action_dim,) or m.output.dim != spec.state_dim:
            raise InputError(f"{model.bundle.path}: the model maps {list(m.input.shape)} inputs to {m.output.dim} "
                             f"outputs, but a controller of {spec.state_dim} states and {spec.action_dim} actions "
                             "needs concat(state, action) -> state change; re-export the bundle")
        self.model, self.spec, self.mode = model, spec, mode
        self.planner = Planner(spec)
        self.reset()

    def reset(self) -> None:
        """A new episode: empty window, the meta-parameters, the planner's stream from its start."""
        self._xs: deque[np.ndarray] = deque(maxlen=self.spec.window)
        self._ys: deque[np.ndarray] = deque(maxlen=self.spec.window)
        self.adapted = Adapted(self.model, self.model.theta0.copy())
        self.adaptations = 0
        self.steps = 0
        self.planner.reset()

    def _state(self, state: np.ndarray, what: str) -> np.ndarray:
        s = np.asarray(state, dtype=np.float32).reshape(-1)
        if s.size != self.spec.state_dim or not np.isfinite(s).all():
            raise InputError(f"{what} must hold {self.spec.state_dim} finite numbers, got {np.asarray(state)!r}")
        return s

    def dynamics(self, x: np.ndarray) -> np.ndarray:
        """The current model's state changes ``(N, S)`` for ``x`` ``(N, S + A)`` (what the planner rolls out)."""
        return self.adapted.predict(x)

    def act(self, state: np.ndarray) -> np.ndarray:
        """The action ``(A,)`` to apply in ``state`` ``(S,)``."""
        return self.planner.plan(self._state(state, "the state"), self.dynamics).action

    def observe(self, state: np.ndarray, action: np.ndarray, next_state: np.ndarray) -> bool:
        """Record one transition (``(S,)``, ``(A,)``, ``(S,)``); returns whether the model was re-adapted now."""
        s, s1 = self._state(state, "the state"), self._state(next_state, "the next state")
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.size != self.spec.action_dim or not np.isfinite(a).all():
            raise InputError(f"the action must hold {self.spec.action_dim} finite numbers, got {np.asarray(action)!r}")
        a = np.clip(a, self.planner.low, self.planner.high)  # what the plant applied
        delta = s1 - s
        if self.spec.wrap:  # angle changes the short way round, as the model was trained on
            delta[list(self.spec.wrap)] = wrap_angle(delta[list(self.spec.wrap)])
        self._xs.append(np.concatenate([s, a]))
        self._ys.append(delta)
        self.steps += 1
        due = self.steps % self.spec.adapt_every == 0  # the window holds min(steps, M) >= K transitions then
        if self.mode != "adapted" or not due:
            return False
        self.adapted = self.model.adapt(np.stack(self._xs), np.stack(self._ys))
        self.adaptations += 1
        return True

    @property
    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """The transitions kept: inputs ``(n, S + A)`` and state changes ``(n, S)``, oldest first."""
        s, a = self.spec.state_dim, self.spec.action_dim
        if not self._xs:
            return np.zeros((0, s + a), np.float32), np.zeros((0, s), np.float32)
        return np.stack(self._xs), np.stack(self._ys)
