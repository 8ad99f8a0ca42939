"""Gradient-based meta-RL: vectorised task families, a functional Gaussian policy, MAML with a policy-gradient
inner step and a TRPO outer step (``docs/meta-rl.md``)."""

from .envs import ENVS, PendulumSwingUp, PointNavigation, VecEnv, make_env
from .policy import GaussianPolicy
from .train import RLConfig, RLRun, load_run, train

__all__ = ["ENVS", "GaussianPolicy", "PendulumSwingUp", "PointNavigation", "RLConfig", "RLRun", "VecEnv",
           "load_run", "make_env", "train"]
