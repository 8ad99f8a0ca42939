"""Meta-learners built on one pure inner loop (see :mod:`.inner`)."""

from .gradient import ALGORITHMS, ANIL, FirstOrderMAML, MetaLearner, MetaSGD, MetaState, Reptile, make_learner
from .inner import InnerLoop, Params
from .losses import get_loss
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
    "Reptile",
    "get_loss",
    "make_learner",
]
