"""Simulated physical systems whose units differ: the plants behind the dynamics and control families.

A :class:`System` is a vectorised, numpy-only simulator of one kind of plant, with per-unit physical parameters
drawn from documented ranges. Every method works on a batch of units at once: ``params`` ``(n, P)``, ``state``
``(n, S)``, ``action`` ``(n, A)``. :meth:`System.step` integrates one control period with fixed-step RK4
sub-steps, clips the action to its bounds, wraps angle states to ``[-pi, pi)`` and adds process noise when given a
generator. Families (supervised transitions for model-based control, episodes for policy-gradient meta-RL) are
built on top and share these simulators.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ParameterRange:
    """One physical parameter and the range units are drawn from (log-uniform where it spans a decade)."""

    name: str
    unit: str
    low: float
    high: float
    log: bool = False

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n,)`` draws."""
        if self.log:
            return np.exp(rng.uniform(np.log(self.low), np.log(self.high), n))
        return rng.uniform(self.low, self.high, n)


def wrap(angle: np.ndarray) -> np.ndarray:
    """Angles to ``[-pi, pi)``."""
    return angle - 2 * np.pi * np.floor((angle + np.pi) / (2 * np.pi))


class System(ABC):
    """A family of plants; subclasses set the class attributes and :meth:`derivative`."""

    name: str = "system"
    state_names: tuple[str, ...] = ()
    state_units: tuple[str, ...] = ()
    action_names: tuple[str, ...] = ()
    action_units: tuple[str, ...] = ()
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    parameters: tuple[ParameterRange, ...] = ()
    #: control period (s) and RK4 sub-steps per period
    dt: float = 0.05
    substeps: int = 4
    #: indices of angle states, kept in [-pi, pi)
    angles: tuple[int, ...] = ()
    #: per-state standard deviation of the process noise added each period
    process_noise: tuple[float, ...] = ()

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def sample_params(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n, P)`` parameters of ``n`` new units, one column per :attr:`parameters` entry."""
        return np.stack([p.sample(rng, n) for p in self.parameters], axis=1)

    @abstractmethod
    def initial_state(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n, S)`` start states of episodes."""

    @abstractmethod
    def derivative(self, params: np.ndarray, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        """``(n, S)`` time derivative of the state under the (clipped) action."""

    def clip(self, action: np.ndarray) -> np.ndarray:
        """``(n, A)`` actions inside the bounds."""
        return np.clip(action, self.action_low, self.action_high)

    def step(self, params: np.ndarray, state: np.ndarray, action: np.ndarray,
             rng: np.random.Generator | None = None) -> np.ndarray:
        """``(n, S)`` state one control period later (noise-free without ``rng``)."""
        u = self.clip(np.asarray(action, dtype=np.float64).reshape(len(state), self.action_dim))
        s = np.asarray(state, dtype=np.float64)
        h = self.dt / self.substeps
        for _ in range(self.substeps):
            k1 = self.derivative(params, s, u)
            k2 = self.derivative(params, s + 0.5 * h * k1, u)
            k3 = self.derivative(params, s + 0.5 * h * k2, u)
            k4 = self.derivative(params, s + h * k3, u)
            s = s + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        if rng is not None:
            s = s + rng.normal(size=s.shape) * np.asarray(self.process_noise)
        if self.angles:
            s[:, self.angles] = wrap(s[:, self.angles])
        return s

    def delta(self, params: np.ndarray, state: np.ndarray, action: np.ndarray,
              rng: np.random.Generator | None = None) -> np.ndarray:
        """``(n, S)`` the state change over one period, angle changes taken the short way round (what a dynamics
        model predicts: ``next = state + delta``, angles then wrapped)."""
        d = self.step(params, state, action, rng) - state
        if self.angles:
            d[:, self.angles] = wrap(d[:, self.angles])
        return d


class Pendulum(System):
    """A motor-driven arm: ``m l^2 w' = k u - b w - m g l sin(theta)``, theta measured from hanging straight down.

    Units differ in mass, length, joint friction and motor gain; at the largest mass and length the motor cannot
    hold the arm horizontal, so reaching the top (theta = pi) takes swinging.
    """

    name = "pendulum"
    state_names = ("theta", "omega")
    state_units = ("rad", "rad/s")
    action_names = ("command",)
    action_units = ("",)
    action_low = (-1.0,)
    action_high = (1.0,)
    parameters = (
        ParameterRange("mass", "kg", 0.5, 1.5),
        ParameterRange("length", "m", 0.5, 1.0),
        ParameterRange("friction", "N m s/rad", 0.02, 0.2, log=True),
        ParameterRange("gain", "N m", 2.0, 6.0),
    )
    dt = 0.05
    substeps = 4
    angles = (0,)
    process_noise = (1e-3, 1e-2)
    gravity = 9.81

    def initial_state(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.stack([rng.uniform(-0.3, 0.3, n), rng.uniform(-0.3, 0.3, n)], axis=1)

    def derivative(self, params: np.ndarray, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        m, length, b, k = params.T
        theta, omega = state.T
        torque = k * action[:, 0] - b * omega - m * self.gravity * length * np.sin(theta)
        return np.stack([omega, torque / (m * length**2)], axis=1)


class DCMotor(System):
    """A voltage-driven DC motor turning a load (a position servo), inductance neglected:
    ``J w' = K (V - K w) / R - b w - c tanh(w / w_c)``.

    Units differ in load inertia, viscous and Coulomb friction, torque constant and winding resistance, so the
    same voltage step moves one unit ten times faster than another.
    """

    name = "dc-motor"
    state_names = ("angle", "speed")
    state_units = ("rad", "rad/s")
    action_names = ("voltage",)
    action_units = ("V",)
    action_low = (-6.0,)
    action_high = (6.0,)
    parameters = (
        ParameterRange("inertia", "kg m^2", 2e-4, 2e-3, log=True),
        ParameterRange("viscous", "N m s/rad", 1e-4, 1e-3, log=True),
        ParameterRange("coulomb", "N m", 0.0, 0.01),
        ParameterRange("torque_constant", "N m/A", 0.02, 0.06),
        ParameterRange("resistance", "ohm", 1.0, 4.0),
    )
    dt = 0.01
    substeps = 5
    process_noise = (1e-4, 1e-2)
    #: speed scale of the smoothed Coulomb friction (rad/s)
    stiction_speed = 0.5

    def initial_state(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.stack([rng.uniform(-0.2, 0.2, n), np.zeros(n)], axis=1)

    def derivative(self, params: np.ndarray, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        inertia, viscous, coulomb, kt, resistance = params.T
        _, speed = state.T
        current = (action[:, 0] - kt * speed) / resistance
        torque = kt * current - viscous * speed - coulomb * np.tanh(speed / self.stiction_speed)
        return np.stack([speed, torque / inertia], axis=1)


SYSTEMS: dict[str, type[System]] = {s.name: s for s in (Pendulum, DCMotor)}
