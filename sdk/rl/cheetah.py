"""HalfCheetah velocity (Finn et al. 2017, section 5.3), on MuJoCo through ``gymnasium[mujoco]``'s model file.

A task is a goal speed, uniform in ``[0, 2]`` m/s; the reward of a step is ``-|v - goal| - 0.05 |a|^2`` with
``v`` the torso's forward speed over the step (rllab's ``HalfCheetahEnvRand``, which the MAML paper used); the
horizon is 200 steps of 0.05 s (5 physics steps of 0.01 s), episodes never end early. The model is gymnasium's own
``half_cheetah.xml`` (shipped in the wheel: nothing is downloaded at run time). Optional: it needs the
``mujoco`` extra (``pip install -e ".[mujoco]"``); without it :class:`HalfCheetahVelocity` refuses with what to do.

Like every :class:`~metaedge.sdk.rl.envs.VecEnv` it is stateless: the state ``(n, E, 18)`` is the cheetah's
``qpos`` (9: root x, z, pitch, six joint angles) then ``qvel`` (9); the observation drops the root x (17, as
gymnasium's ``HalfCheetah-v5``). :meth:`step` loads each state into one ``MjData``, zeroes the solver's warm start
(so a step depends on the state alone, whatever ran before) and integrates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ...errors import InputError
from .envs import VecEnv

log = logging.getLogger(__name__)

#: per-step control cost weight (rllab: 0.5 * 1e-1)
CONTROL_COST = 0.05
#: start-state noise (gymnasium v5: uniform +-0.1 on qpos, normal 0.1 on qvel)
RESET_NOISE = 0.1


@contextmanager
def mujoco_warnings_logged() -> Iterator[None]:
    """MuJoCo's warnings go to this module's logger meanwhile. The cheetah model's ``settotalmass`` draws a
    deprecation warning from the compiler, which MuJoCo would otherwise append to a MUJOCO_LOG.TXT in the working
    directory."""
    import mujoco

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: log.debug("MuJoCo: %s", message))
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def _model_file() -> Path:
    try:
        import gymnasium.envs.mujoco as gym_mujoco
    except ImportError as e:  # gymnasium itself, or its mujoco dependencies
        raise InputError("the half-cheetah-vel family needs gymnasium[mujoco]; install it with "
                         "`pip install -e \".[mujoco]\"` (or `pip install \"gymnasium[mujoco]\"`)") from e
    path = Path(gym_mujoco.__file__).parent / "assets" / "half_cheetah.xml"
    if not path.is_file():
        raise InputError(f"gymnasium's HalfCheetah model is missing ({path}); reinstall gymnasium[mujoco]")
    return path


class HalfCheetahVelocity(VecEnv):
    """Run the MuJoCo half-cheetah forward at a per-task goal speed (see the module docstring)."""

    name = "half-cheetah-vel"
    obs_dim = 17
    action_dim = 6
    horizon = 200
    discount = 0.99
    goal_low, goal_high = 0.0, 2.0
    action_low, action_high = (-1.0,) * 6, (1.0,) * 6
    frame_skip = 5

    def __init__(self) -> None:
        path = _model_file()  # refuses first where gymnasium[mujoco] is missing
        import mujoco

        self._mj = mujoco
        with mujoco_warnings_logged():
            self.model = mujoco.MjModel.from_xml_path(str(path))
        self.data = mujoco.MjData(self.model)
        self.nq, self.nv = self.model.nq, self.model.nv
        self.init_qpos = self.data.qpos.copy()
        self.dt = self.model.opt.timestep * self.frame_skip

    def sample_tasks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.goal_low, self.goal_high, (n, 1))

    def reset(self, tasks: np.ndarray, episodes: int, rng: np.random.Generator) -> np.ndarray:
        n = len(tasks)
        qpos = self.init_qpos + rng.uniform(-RESET_NOISE, RESET_NOISE, (n, episodes, self.nq))
        qvel = RESET_NOISE * rng.standard_normal((n, episodes, self.nv))
        return np.concatenate([qpos, qvel], axis=-1)

    def observe(self, state: np.ndarray) -> np.ndarray:
        return state[..., 1:]

    def step(self, tasks: np.ndarray, state: np.ndarray, action: np.ndarray,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        a = np.clip(action, -1.0, 1.0)
        flat_s, flat_a = state.reshape(-1, self.nq + self.nv), a.reshape(-1, self.action_dim)
        out = np.empty_like(flat_s)
        d, nq = self.data, self.nq
        for i in range(len(flat_s)):
            d.qpos[:] = flat_s[i, :nq]
            d.qvel[:] = flat_s[i, nq:]
            d.qacc_warmstart[:] = 0.0
            d.ctrl[:] = flat_a[i]
            self._mj.mj_step(self.model, d, nstep=self.frame_skip)
            out[i, :nq], out[i, nq:] = d.qpos, d.qvel
        nxt = out.reshape(state.shape)
        speed = (nxt[..., 0] - state[..., 0]) / self.dt
        reward = -np.abs(speed - tasks[:, :1]) - CONTROL_COST * (a**2).sum(-1)
        return nxt, reward
