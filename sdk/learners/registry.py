"""Meta-learners by name, as used in run configs and on the command line."""

from __future__ import annotations

from torch import nn

from .gradient import ANIL, FirstOrderMAML, MetaLearner, MetaSGD, Reptile
from .newton import RidgeHead
from .protonet import ProtoNet

ALGORITHMS: dict[str, type[MetaLearner]] = {
    cls.algo: cls for cls in (MetaLearner, FirstOrderMAML, MetaSGD, ANIL, Reptile, RidgeHead, ProtoNet)
}


def make_learner(algo: str, model: nn.Module, **options) -> MetaLearner:
    """Build the learner called ``algo``: one of :data:`ALGORITHMS`."""
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown meta-learning algorithm {algo!r}; choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[algo](model, **options)
