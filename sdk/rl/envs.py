"""Vectorised task families for policy-gradient meta-RL: every method acts on all tasks and episodes at once.

A :class:`VecEnv` holds no state of its own: ``tasks`` ``(n, K)`` (one row per task: a goal, a unit's physical
parameters), ``state`` ``(n, E, S)`` (``E`` episodes per task run side by side) and ``action`` ``(n, E, A)`` go
in, arrays come out; there is no Python loop over tasks or episodes. Episodes have a fixed horizon and never end
early, so a batch of rollouts is one dense ``(n, E, T, ...)`` block (what ``vmap`` over tasks wants).

* :class:`PointNavigation`: the 2D point of Finn et al. 2017 (section 5.3, after rllab's ``PointEnv``): start at
  the origin, goal uniform in ``[-0.5, 0.5]^2`` per task, action = displacement clipped to ``[-0.1, 0.1]`` per
  axis, reward = minus the distance to the goal after the move, horizon 100.
* :class:`PendulumSwingUp`: the motor-driven arm of :class:`~metaedge.sdk.tasks.systems.Pendulum` (its own
  physics and parameter ranges: mass, length, friction, motor gain per unit), reward = minus the quadratic cost
  ``q_angle * wrap(theta - pi)^2 + q_speed * omega^2 + r * u^2`` towards the upright target ``(pi, 0)``.
* :class:`~metaedge.sdk.rl.cheetah.HalfCheetahVelocity` (``half-cheetah-vel``): the MuJoCo half-cheetah running at a
  per-task goal speed (Finn et al. 2017), optional: it needs the ``mujoco`` extra.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ...errors import InputError
from ..tasks.systems import Pendulum, wrap


class VecEnv(ABC):
    """A family of tasks with batched, stateless dynamics (see the module docstring for shapes)."""

    name: str = "env"
    obs_dim: int = 0
    action_dim: int = 0
    horizon: int = 100
    #: discount of the returns the policy gradient uses
    discount: float = 0.99
    #: per-dimension action bounds (the env clips to them)
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()

    @abstractmethod
    def sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n, K)`` new tasks."""

    @abstractmethod
    def reset(self, tasks: np.ndarray, episodes: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, E, S)`` start states of ``episodes`` episodes per task."""

    @abstractmethod
    def observe(self, state: np.ndarray) -> np.ndarray:
        """``(n, E, O)`` what the policy sees of ``state`` ``(n, E, S)``."""

    @abstractmethod
    def step(self, tasks: np.ndarray, state: np.ndarray, action: np.ndarray,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(next_state (n, E, S), reward (n, E))`` after ``action`` ``(n, E, A)`` (clipped here)."""


class PointNavigation(VecEnv):
    """A point mass in the plane moving towards a per-task goal (Finn et al. 2017, section 5.3)."""

    name = "nav2d"
    obs_dim = 2
    action_dim = 2
    horizon = 100
    discount = 0.99
    goal_low, goal_high = -0.5, 0.5
    action_bound = 0.1
    action_low, action_high = (-0.1, -0.1), (0.1, 0.1)

    def sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.goal_low, self.goal_high, (n, 2))

    def reset(self, tasks: np.ndarray, episodes: int, rng: np.random.Generator) -> np.ndarray:
        return np.zeros((len(tasks), episodes, 2))

    def observe(self, state: np.ndarray) -> np.ndarray:
        return state

    def step(self, tasks: np.ndarray, state: np.ndarray, action: np.ndarray,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        moved = state + np.clip(action, -self.action_bound, self.action_bound)
        return moved, -np.linalg.norm(moved - tasks[:, None, :], axis=-1)


class PendulumSwingUp(VecEnv):
    """Swing a unit of the :class:`Pendulum` family from hanging to upright; a task is one unit's parameters.

    Observation ``(cos theta, sin theta, omega)`` (continuous across the angle wrap); the action is the motor
    command in ``[-1, 1]``. Process noise of the simulator is added when :meth:`step` is given a generator.
    """

    name = "pendulum"
    obs_dim = 3
    action_dim = 1
    horizon = 100
    discount = 0.99
    #: the target state (upright, at rest) and the weights of the quadratic cost
    target = (np.pi, 0.0)
    q_angle, q_speed, r_action = 1.0, 0.1, 0.01
    action_low, action_high = Pendulum.action_low, Pendulum.action_high

    def __init__(self) -> None:
        self.system = Pendulum()

    def sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.system.sample_params(rng, n)

    def reset(self, tasks: np.ndarray, episodes: int, rng: np.random.Generator) -> np.ndarray:
        return self.system.initial_state(rng, len(tasks) * episodes).reshape(len(tasks), episodes, 2)

    def observe(self, state: np.ndarray) -> np.ndarray:
        theta, omega = state[..., 0], state[..., 1]
        return np.stack([np.cos(theta), np.sin(theta), omega], axis=-1)

    def cost(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        """``(n, E)`` quadratic cost of ``state`` ``(n, E, 2)`` under the clipped ``action`` ``(n, E, 1)``."""
        angle = wrap(state[..., 0] - self.target[0])
        speed = state[..., 1] - self.target[1]
        return self.q_angle * angle**2 + self.q_speed * speed**2 + self.r_action * action[..., 0] ** 2

    def step(self, tasks: np.ndarray, state: np.ndarray, action: np.ndarray,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        n, e = state.shape[:2]
        u = self.system.clip(action.reshape(n * e, 1))
        nxt = self.system.step(np.repeat(tasks, e, axis=0), state.reshape(n * e, 2), u, rng).reshape(n, e, 2)
        return nxt, -self.cost(nxt, u.reshape(n, e, 1))


# after VecEnv: the MuJoCo family subclasses it (and imports mujoco only when one is built)
from .cheetah import HalfCheetahVelocity  # noqa: E402

ENVS: dict[str, type[VecEnv]] = {e.name: e for e in (PointNavigation, PendulumSwingUp, HalfCheetahVelocity)}


def make_env(name: str) -> VecEnv:
    """The family ``name`` (``nav2d`` or ``pendulum``); InputError naming the known ones otherwise."""
    if name not in ENVS:
        raise InputError(f"unknown RL family {name!r}; choose one of {', '.join(sorted(ENVS))}")
    return ENVS[name]()
