"""Meta-learners built on one pure inner loop (see :mod:`.inner`), each a :class:`Learner`."""

from .base import SOLVER_KINDS, DeviceSolver, Learner, MetaState
from .gradient import ANIL, MAML, FirstOrderMAML, MetaSGD, Reptile
from .inner import InnerLoop, Params
from .losses import get_loss, loss_for
from .newton import RidgeHead
from .protonet import ProtoNet
from .registry import ALGORITHMS, algorithm_names, learner_class, make_learner, register_learner
from .spec import AdaptSpec

__all__ = [
    "ALGORITHMS",
    "ANIL",
    "MAML",
    "SOLVER_KINDS",
    "AdaptSpec",
    "DeviceSolver",
    "FirstOrderMAML",
    "InnerLoop",
    "Learner",
    "MetaSGD",
    "MetaState",
    "Params",
    "ProtoNet",
    "Reptile",
    "RidgeHead",
    "algorithm_names",
    "get_loss",
    "learner_class",
    "loss_for",
    "make_learner",
    "register_learner",
]
