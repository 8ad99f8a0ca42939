"""A policy bundle on the device: read it, act, and adapt the policy from the unit's own episodes.

Torch-free (numpy + onnxruntime). A policy bundle is a folder written by ``metaedge rl-export``:

* ``policy.json``: a :class:`PolicyRecord` (typed, read by the manifest's generic reader: one sentence naming the
  field when it is missing or wrongly typed), with the sha256 of every other file;
* ``forward.onnx``: ``(theta (P,), obs (N, O)) -> (mean (N, A), log_std (A,))``;
* ``adapt_step.onnx``: ``(theta (P,), obs (N, O), actions (N, A), advantages (N,)) -> theta' (P,)``, one
  REINFORCE step ``theta - lr * grad(-mean(log pi(a|o) A))``, the learned inner step rate baked in;
* ``theta0.npy``: the meta-learned parameters ``(P,)``.

:func:`advantages` is the device's half of the policy gradient: discounted returns and the linear feature
baseline of Duan et al. 2016 fitted in float64, the same definition as the SDK's (``metaedge.sdk.rl.advantages``)
and the C library's ``me_advantages``:

* ``R[e, t] = sum_{k >= t} gamma^(k - t) r[e, k]``;
* ``phi(o, t) = [c, c^2, t/100, (t/100)^2, (t/100)^3, 1]``, ``c = clip(o, -10, 10)`` (``2 O + 4`` features);
* ``w`` solves ``(Phi^T Phi + reg I) w = Phi^T R`` over all ``E T`` steps by Cholesky, ``reg`` starting at 1e-5 and
  growing tenfold (at most 5 tries) while the matrix is not positive definite;
* ``A = R - Phi w``, standardised ``(A - mean) / (std + 1e-8)`` over all steps when ``normalize``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InputError
from .bundle import _listed_file, _read_bounded, sha256
from .errors import BundleError, ManifestError
from .manifest import Layout, _Part

#: the newest policy.json format this runtime reads
POLICY_FORMAT_VERSION = 1
RECORD = "policy.json"
BASELINE_REG = 1e-5
BASELINE_REG_TRIES = 5
NORMALIZE_EPS = 1e-8
OBS_CLIP = 10.0
TIME_SCALE = 100.0


# --- advantages -----------------------------------------------------------------------------------------------------

def discounted_returns(rewards: np.ndarray, discount: float) -> np.ndarray:
    """``(E, T)`` float64 returns-to-go of ``rewards`` ``(E, T)``."""
    r = np.asarray(rewards, dtype=np.float64)
    out = np.empty_like(r)
    acc = np.zeros(r.shape[:-1])
    for t in range(r.shape[-1] - 1, -1, -1):
        acc = r[..., t] + discount * acc
        out[..., t] = acc
    return out


def baseline_features(obs: np.ndarray) -> np.ndarray:
    """``(E, T, 2 O + 4)`` float64 baseline features of ``obs`` ``(E, T, O)``."""
    o = np.clip(np.asarray(obs, dtype=np.float64), -OBS_CLIP, OBS_CLIP)
    t = np.broadcast_to((np.arange(o.shape[1]) / TIME_SCALE)[None, :, None], (*o.shape[:2], 1))
    return np.concatenate([o, o**2, t, t**2, t**3, np.ones_like(t)], axis=-1)


def _check_episodes(obs: np.ndarray, rewards: np.ndarray, actions: np.ndarray | None = None,
                    obs_dim: int | None = None, action_dim: int | None = None) -> None:
    """One-sentence InputErrors for mis-shaped or non-finite episodes."""
    if obs.ndim != 3 or (obs_dim is not None and obs.shape[2] != obs_dim):
        want = f"(episodes, steps, {obs_dim})" if obs_dim is not None else "(episodes, steps, obs_dim)"
        raise InputError(f"observations must have shape {want}, got {obs.shape}; pass one row per step")
    if rewards.shape != obs.shape[:2]:
        raise InputError(f"rewards must have shape {obs.shape[:2]} (episodes, steps) like the observations, got "
                         f"{rewards.shape}")
    if actions is not None and (actions.ndim != 3 or actions.shape[:2] != obs.shape[:2]
                                or (action_dim is not None and actions.shape[2] != action_dim)):
        raise InputError(f"actions must have shape {(*obs.shape[:2], action_dim or 'action_dim')}, got "
                         f"{actions.shape}")
    for name, a in (("observations", obs), ("rewards", rewards), ("actions", actions)):
        if a is not None and not np.isfinite(a).all():
            raise InputError(f"the {name} hold NaN or infinite values; drop the broken episodes before adapting")


def advantages(obs: np.ndarray, rewards: np.ndarray, discount: float,
               normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(returns, advantages)``, each ``(E, T)`` float32, of one task's ``E`` episodes of ``T`` steps
    (``obs`` ``(E, T, O)``, ``rewards`` ``(E, T)``); see the module docstring for the definition."""
    obs, rewards = np.asarray(obs), np.asarray(rewards)
    _check_episodes(obs, rewards)
    ret = discounted_returns(rewards, discount)
    phi = baseline_features(obs).reshape(-1, 2 * obs.shape[2] + 4)
    target = ret.reshape(-1)
    gram, rhs = phi.T @ phi, phi.T @ target
    reg = BASELINE_REG
    for _ in range(BASELINE_REG_TRIES):
        try:
            chol = np.linalg.cholesky(gram + reg * np.eye(len(gram)))
            break
        except np.linalg.LinAlgError:
            reg *= 10
    else:
        raise InputError("the baseline's normal equations are not positive definite even with the largest "
                         "regularisation; the episodes are degenerate (all observations equal?)")
    w = np.linalg.solve(chol.T, np.linalg.solve(chol, rhs))
    adv = target - phi @ w
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + NORMALIZE_EPS)
    return ret.astype(np.float32), adv.reshape(ret.shape).astype(np.float32)


# --- the record -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PolicyGraphs(_Part):
    """File names of the bundle's two graphs."""

    forward: str
    adapt_step: str


@dataclass(frozen=True)
class PolicyParity(_Part):
    """Largest absolute differences between the exported graphs (ONNX Runtime) and PyTorch at export."""

    forward: float
    adapt_step: float
    samples: int


@dataclass(frozen=True)
class PolicyRecord(_Part):
    """``policy.json``: what a device needs to act with and adapt a Gaussian MLP policy."""

    format_version: int
    kind: Literal["policy"]
    family: str
    obs_dim: int
    action_dim: int
    hidden: tuple[int, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    horizon: int
    discount: float
    #: step size of the inner policy-gradient step (baked into adapt_step.onnx; stated for the record)
    inner_lr: float
    #: the flat parameter vector: layers.{i}.weight / .bias, then log_std
    layout: Layout
    graphs: PolicyGraphs
    #: ``{file name: sha256}`` of every other file of the bundle
    files: dict[str, str]
    parity: PolicyParity | None = None
    #: the run it came from and the metaedge version (opaque here)
    provenance: dict[str, str] | None = None

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.format_version != POLICY_FORMAT_VERSION:
            yield "format_version", f"must be {POLICY_FORMAT_VERSION} (this runtime's), got {self.format_version}"
        if len(self.action_low) != self.action_dim or len(self.action_high) != self.action_dim:
            yield "action_low", f"and action_high must hold one bound per action ({self.action_dim})"
        for name in ("theta0.npy", self.graphs.forward, self.graphs.adapt_step):
            if name not in self.files:
                yield f"files.{name}", "is missing (the runtime needs it)"

    @classmethod
    def parse(cls, data: object) -> PolicyRecord:
        """Untrusted decoded JSON as a record; :class:`ManifestError` (one sentence) when it is not one."""
        try:
            return cls._read(data, "")
        except ManifestError as e:  # the generic reader names the bundle exporter of model bundles
            raise ManifestError(str(e).replace("`metaedge export`", "`metaedge rl-export`")) from None

    def to_json(self) -> str:
        return json.dumps(self._write(), indent=2) + "\n"

    @property
    def size(self) -> int:
        return sum(p.size for p in self.layout.parameters)


# --- the bundle and its runtime -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PolicyBundle:
    """A verified policy bundle folder."""

    path: Path
    record: PolicyRecord
    theta0: np.ndarray  # (P,) float32

    @classmethod
    def open(cls, path: str | Path) -> PolicyBundle:
        """Read and verify (every file's sha256, no links, nothing outside the folder, no pickle)."""
        path = Path(path)
        if not (path / RECORD).is_file():
            raise BundleError(f"{path} has no {RECORD}; is it a policy bundle written by `metaedge rl-export`?")
        raw = _read_bounded(path / RECORD, 1 << 20, path)
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{path}: {RECORD} is not valid JSON ({e}); re-export the bundle") from None
        record = PolicyRecord.parse(data)
        for name, digest in record.files.items():
            if sha256(_listed_file(path, name, path)) != digest:
                raise BundleError(f"{path}: {name} does not match its sha256 in {RECORD}; the bundle was modified "
                                  "or corrupted, re-export it")
        try:
            theta0 = np.load(path / "theta0.npy", allow_pickle=False)
        except ValueError as e:
            raise BundleError(f"{path}: theta0.npy is not a plain numeric array ({e}); re-export the bundle") from None
        if theta0.shape != (record.size,) or not np.isfinite(theta0).all():
            raise BundleError(f"{path}: theta0.npy must hold {record.size} finite floats, got shape {theta0.shape}; "
                              "re-export the bundle")
        return cls(path, record, theta0.astype(np.float32))


class PolicyRuntime:
    """Acting and adapting with a policy bundle through ONNX Runtime (one thread by default)."""

    def __init__(self, bundle: PolicyBundle, threads: int = 1) -> None:
        from .backends.base import Plan
        from .backends.onnxruntime import session

        self.bundle = bundle
        self.record = bundle.record
        plan = Plan("onnxruntime", "", threads=threads)
        self._forward = session(bundle.path / self.record.graphs.forward, plan)
        self._step = session(bundle.path / self.record.graphs.adapt_step, plan)

    @cached_property
    def theta0(self) -> np.ndarray:
        return self.bundle.theta0.copy()

    def _theta(self, theta: np.ndarray | None) -> np.ndarray:
        if theta is None:
            return self.theta0
        theta = np.asarray(theta, dtype=np.float32)
        if theta.shape != (self.record.size,) or not np.isfinite(theta).all():
            raise InputError(f"theta must hold {self.record.size} finite floats (the bundle's layout), got shape "
                             f"{theta.shape}; pass bundle.theta0 or a state this bundle adapted")
        return theta

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.record.obs_dim or len(obs) == 0:
            raise InputError(f"observations must have shape (n, {self.record.obs_dim}) with n >= 1, got {obs.shape}")
        if not np.isfinite(obs).all():
            raise InputError("the observations hold NaN or infinite values; check the sensors before acting")
        return obs

    def distribution(self, theta: np.ndarray | None, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mean (n, A), log_std (A,))`` of the policy at ``obs`` ``(n, O)``."""
        mean, log_std = self._forward.run(None, {"theta": self._theta(theta), "obs": self._obs(obs)})
        return mean, log_std

    def act(self, theta: np.ndarray | None, obs: np.ndarray, rng: np.random.Generator | None = None
            ) -> np.ndarray:
        """``(n, A)`` sampled actions (the mean without ``rng``), unclipped: the plant clips to
        ``record.action_low/high``; adapting needs the sampled values."""
        mean, log_std = self.distribution(theta, obs)
        if rng is None:
            return mean
        return (mean + np.exp(log_std) * rng.standard_normal(mean.shape)).astype(np.float32)

    def step(self, theta: np.ndarray | None, obs: np.ndarray, actions: np.ndarray, adv: np.ndarray) -> np.ndarray:
        """``(P,)`` parameters after one policy-gradient step on ``obs`` ``(N, O)``, ``actions`` ``(N, A)`` and
        advantages ``(N,)``."""
        obs = self._obs(obs)
        actions = np.asarray(actions, dtype=np.float32)
        adv = np.asarray(adv, dtype=np.float32)
        if actions.shape != (len(obs), self.record.action_dim) or adv.shape != (len(obs),):
            raise InputError(f"actions must have shape ({len(obs)}, {self.record.action_dim}) and advantages "
                             f"({len(obs)},) to match the observations, got {actions.shape} and {adv.shape}")
        if not (np.isfinite(actions).all() and np.isfinite(adv).all()):
            raise InputError("the actions or advantages hold NaN or infinite values; drop the broken episodes")
        (new,) = self._step.run(None, {"theta": self._theta(theta), "obs": obs, "actions": actions,
                                       "advantages": adv})
        return new

    def adapt(self, theta: np.ndarray | None, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray
              ) -> np.ndarray:
        """``(P,)`` parameters after one policy-gradient step on ``E`` episodes of ``T`` steps of the unit:
        ``obs`` ``(E, T, O)``, ``actions`` ``(E, T, A)`` (as sampled), ``rewards`` ``(E, T)``."""
        obs, actions, rewards = np.asarray(obs), np.asarray(actions), np.asarray(rewards)
        _check_episodes(obs, rewards, actions, self.record.obs_dim, self.record.action_dim)
        _, adv = advantages(obs, rewards, self.record.discount)
        return self.step(theta, obs.reshape(-1, obs.shape[2]), actions.reshape(-1, actions.shape[2]),
                         adv.reshape(-1))
