"""Dynamics task families: learn a unit's one-step state change for model-predictive control.

One generic :class:`DynamicsFamily` over a simulated plant (:mod:`.systems`); the registered families only choose
the plant, the region it operates in and the controller a bundle states:

===================== ========================== ==================== =================================
registry name         inputs (state, action)     outputs (the change) controller goal (docs/control.md)
===================== ========================== ==================== =================================
pendulum-dynamics     theta, omega, command      d_theta, d_omega     swing up to and hold theta = pi
dc-motor-dynamics     angle, speed, voltage      d_angle, d_speed     turn to and hold angle = 1 rad
===================== ========================== ==================== =================================

A task is one unit, its physical parameters drawn from the System's documented ranges. Inputs are
``concat(state, action)``, targets :meth:`System.delta` with process noise (the short way round for angles).

- **Support**: ``shots`` (M) consecutive transitions of the unit's own trajectory under the exploration policy a
  device can run before it has a model of its own: smoothed random actions (an AR(1) process over the full
  action range, correlation :attr:`DynamicsFamily.smoothing` per step), for a share :attr:`DynamicsFamily.
  rest_fraction` of the units from the plant's episode start (``System.initial_state``: where a device's window
  begins, in a narrow corner of the state space), for the others from a state drawn over the operating region
  (where the controller takes it later).
- **Query**: ``queries`` further transitions of the same unit from states drawn uniformly over the operating
  region (:attr:`Region`) with uniform actions, so the adapted model is scored where the controller will go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import InputError
from .base import Split, Task, TaskBatch, TaskFamily, register_family
from .systems import DCMotor, Pendulum, System, wrap


@dataclass(frozen=True)
class Region:
    """The box of states a unit operates in: ``low``/``high`` ``(S,)`` per state dimension, physical units."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n, S)`` states drawn uniformly over the box."""
        return rng.uniform(self.low, self.high, size=(n, len(self.low)))


class DynamicsFamily(TaskFamily):
    """One-step dynamics of the units of ``system`` (see the module docstring for support and query).

    Args:
        system: the simulated plant.
        name: registry name (shown in :meth:`describe`, rebuilt from it by ``make_family``).
        region: the operating region: query states, and where support trajectories start.
        control: the controller a bundle of this family states (keys of the manifest's ``control`` part).
        episode_steps: control steps of one closed-loop episode (``metaedge control``'s default ``--steps``).
        smoothing: per-step correlation of the exploration actions (0: white noise).
        rest_fraction: share of the units whose support trajectory starts where episodes start.
    """

    task_kind = "regression"
    normalize = True
    metric = "rmse"

    def __init__(self, system: System, name: str, region: Region, control: dict[str, Any], episode_steps: int,
                 smoothing: float = 0.8, rest_fraction: float = 0.5) -> None:
        if not 0 <= smoothing < 1:
            raise InputError(f"smoothing must be in [0, 1), got {smoothing}")
        if not 0 <= rest_fraction <= 1:
            raise InputError(f"rest_fraction must be in [0, 1], got {rest_fraction}")
        s, a = system.state_dim, system.action_dim
        if len(region.low) != s or len(region.high) != s:
            raise InputError(f"the operating region of {name} must bound each of its {s} states")
        self.system = system
        self.name = name
        self.region = region
        self.smoothing = float(smoothing)
        self.rest_fraction = float(rest_fraction)
        self.episode_steps = int(episode_steps)
        self.input_shape = (s + a,)
        self.output_dim = s
        self.input_names = (*system.state_names, *system.action_names)
        self.input_units = (*system.state_units, *system.action_units)
        self.output_names = tuple(f"d_{n}" for n in system.state_names)
        self.output_units = system.state_units
        self.control_defaults = {"state_dim": s, "action_dim": a, "action_low": list(system.action_low),
                                 "action_high": list(system.action_high), "dt": system.dt,
                                 "wrap": list(system.angles), **control}

    # --- sampling ----------------------------------------------------------------------------------------------
    def explore(self, rng: np.random.Generator, n: int, steps: int, previous: np.ndarray | None = None
                ) -> np.ndarray:
        """``(steps, n, A)`` smoothed random actions over the full action range for ``n`` units, continuing from
        ``previous`` ``(n, A)`` (None: a fresh uniform draw)."""
        low, high = np.asarray(self.system.action_low), np.asarray(self.system.action_high)
        mid, half = (low + high) / 2, (high - low) / 2
        rho = self.smoothing
        z = rng.uniform(-1, 1, (n, len(low))) if previous is None else (previous - mid) / half
        out = np.empty((steps, n, len(low)))
        for t in range(steps):
            # AR(1) with the variance of U(-1, 1), clipped to the range
            z = np.clip(rho * z + np.sqrt(1 - rho**2) * rng.normal(0, np.sqrt(1 / 3), z.shape), -1, 1)
            out[t] = mid + half * z
        return out

    def trajectory(self, rng: np.random.Generator, params: np.ndarray, state: np.ndarray, actions: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run ``actions`` ``(T, n, A)`` on units ``params`` ``(n, P)`` from ``state`` ``(n, S)`` with process
        noise: inputs ``(n, T, S + A)``, targets ``(n, T, S)`` (state changes) and the final states ``(n, S)``."""
        xs, ys = [], []
        s = state
        for a in actions:
            d = self.system.delta(params, s, a, rng)
            xs.append(np.concatenate([s, self.system.clip(a)], axis=1))
            ys.append(d)
            s = advance(self.system, s, d)
        return np.stack(xs, 1), np.stack(ys, 1), s

    def transitions(self, rng: np.random.Generator, params: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` transitions per unit from uniform states of the region with uniform actions: inputs
        ``(units, n, S + A)``, targets ``(units, n, S)``."""
        units = len(params)
        sys = self.system
        states = self.region.sample(rng, units * n)
        actions = rng.uniform(sys.action_low, sys.action_high, size=(units * n, sys.action_dim))
        d = sys.delta(np.repeat(params, n, axis=0), states, actions, rng)
        x = np.concatenate([states, actions], axis=1).reshape(units, n, -1)
        return x, d.reshape(units, n, -1)

    def sample_task(self, rng: np.random.Generator, shots: int, queries: int, split: Split = "train") -> Task:
        return self.sample_batch(rng, 1, shots, queries, split).task(0)

    def sample_batch(self, rng: np.random.Generator, n_tasks: int, shots: int, queries: int,
                     split: Split = "train") -> TaskBatch:
        """``n_tasks`` units at once (vectorised over units; every draw is a new unit, so ``split`` is ignored)."""
        params = self.system.sample_params(rng, n_tasks)
        start = self.region.sample(rng, n_tasks)
        at_rest = rng.random(n_tasks) < self.rest_fraction
        start[at_rest] = self.system.initial_state(rng, n_tasks)[at_rest]
        xs, ys, _ = self.trajectory(rng, params, start, self.explore(rng, n_tasks, shots))
        xq, yq = self.transitions(rng, params, queries)
        names = [p.name for p in self.system.parameters]
        info = [{"unit_params": params[i].tolist(), **dict(zip(names, params[i].tolist()))} for i in range(n_tasks)]
        f32 = lambda a: a.astype(np.float32)  # noqa: E731
        return TaskBatch(f32(xs), f32(ys), f32(xq), f32(yq), info)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "system": self.system.name, "smoothing": self.smoothing,
                "rest_fraction": self.rest_fraction,
                "episode_steps": self.episode_steps,
                "parameters": [{"name": p.name, "unit": p.unit, "low": p.low, "high": p.high, "log": p.log}
                               for p in self.system.parameters],
                "region": {"low": list(self.region.low), "high": list(self.region.high)}}

    @staticmethod
    def options(description: dict[str, Any]) -> dict[str, Any]:
        """The ``make_family`` options that rebuild the family a :meth:`describe` output came from."""
        return {k: description[k] for k in ("smoothing", "rest_fraction") if k in description}


def advance(system: System, state: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``(n, S)`` the state after a change ``delta`` (angles wrapped), as a planner advances its prediction."""
    s = state + delta
    if system.angles:
        s[:, list(system.angles)] = wrap(s[:, list(system.angles)])
    return s


#: CEM (3 rounds of 64 sequences over 25 steps, refit to the 8 cheapest) for both plants: with the true dynamics it
#: swings every pendulum unit up within 6 s and turns every motor to its target within 1 s (docs/control.md), where
#: random shooting with 200 sequences over 30 steps leaves the weakest pendulums hanging.
_CEM: dict[str, Any] = {"planner": "cem", "horizon": 25, "candidates": 64, "iterations": 3, "elites": 8, "seed": 0,
                        "window": 20, "adapt_every": 5}
#: pendulum: swing up from hanging and hold the top; the angle error dominates the cost, a small speed weight keeps
#: the arm from sweeping through the top
PENDULUM_CONTROL: dict[str, Any] = {**_CEM, "q": [1.0, 0.01], "r": [0.001], "target": [float(np.pi), 0.0]}
#: motor: turn from near 0 to 1 rad and hold
DC_MOTOR_CONTROL: dict[str, Any] = {**_CEM, "q": [1.0, 1e-4], "r": [1e-4], "target": [1.0, 0.0]}


@register_family("pendulum-dynamics")
def pendulum_dynamics(smoothing: float = 0.8, rest_fraction: float = 0.5) -> DynamicsFamily:
    """Motor-driven pendulum units (:class:`.systems.Pendulum`); region theta in [-pi, pi), omega in +-10 rad/s."""
    return DynamicsFamily(Pendulum(), "pendulum-dynamics", Region((-np.pi, -10.0), (np.pi, 10.0)),
                          PENDULUM_CONTROL, 120, smoothing, rest_fraction)


@register_family("dc-motor-dynamics")
def dc_motor_dynamics(smoothing: float = 0.8, rest_fraction: float = 0.5) -> DynamicsFamily:
    """DC motor position servos (:class:`.systems.DCMotor`); region angle in [-1, 2] rad, speed in +-30 rad/s."""
    return DynamicsFamily(DCMotor(), "dc-motor-dynamics", Region((-1.0, -30.0), (2.0, 30.0)), DC_MOTOR_CONTROL,
                          100, smoothing, rest_fraction)
