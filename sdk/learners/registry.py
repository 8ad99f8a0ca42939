"""Meta-learners by name, as used in run configs and on the command line (``--algo``)."""

from __future__ import annotations

from torch import nn

from ...errors import InputError
from .base import Learner
from .gradient import ANIL, MAML, FirstOrderMAML, MetaSGD, Reptile
from .newton import RidgeHead
from .protonet import ProtoNet

#: registered learner classes by :attr:`Learner.name`; extend with :func:`register_learner`
ALGORITHMS: dict[str, type[Learner]] = {}


def register_learner(cls: type[Learner]) -> type[Learner]:
    """Make ``cls`` buildable as ``make_learner(cls.name, ...)`` and selectable as ``metaedge train --algo NAME``.

    Usable as a class decorator; registering another class under a taken name replaces it.
    """
    if not (isinstance(cls, type) and issubclass(cls, Learner)):
        raise InputError(f"{cls!r} is not a Learner subclass; derive it from metaedge.sdk.learners.Learner")
    ALGORITHMS[cls.name] = cls
    return cls


def algorithm_names() -> list[str]:
    """Registered learner names, in registration order."""
    return list(ALGORITHMS)


def learner_class(algo: str) -> type[Learner]:
    """The learner class registered as ``algo``."""
    if algo not in ALGORITHMS:
        raise InputError(f"unknown meta-learning algorithm {algo!r}; choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[algo]


def make_learner(algo: str, model: nn.Module, **options) -> Learner:
    """Build the learner called ``algo`` (one of :data:`ALGORITHMS`) over ``model``."""
    return learner_class(algo)(model, **options)


for _cls in (MAML, FirstOrderMAML, MetaSGD, ANIL, Reptile, RidgeHead, ProtoNet):
    register_learner(_cls)
