"""Meta-learners built on one pure inner loop (see :mod:`.inner`)."""

from .gradient import ANIL, FirstOrderMAML, MetaLearner, MetaSGD, MetaState, Reptile
from .inner import InnerLoop, Params
from .losses import get_loss
from .protonet import ProtoNet
from .registry import ALGORITHMS, make_learner
from .spec import AdaptSpec

__all__ = [
    "ALGORITHMS",
    "ANIL",
    "AdaptSpec",
    "FirstOrderMAML",
    "InnerLoop",
    "MetaLearner",
    "MetaSGD",
    "MetaState",
    "Params",
    "ProtoNet",
    "Reptile",
    "get_loss",
    "make_learner",
]
