"""Task families: sinusoid benchmark, sensor physics, per-unit tables, few-shot classification (Omniglot, UCR/UEA
time series, image folders), and user-registered families."""

from . import dynamics as _dynamics  # noqa: F401  (registers "pendulum-dynamics", "dc-motor-dynamics")
from . import glyphs as _glyphs  # noqa: F401  (registers "glyphs")
from . import images as _images  # noqa: F401  (registers "image-folder")
from . import mixture as _mixture  # noqa: F401  (registers "mixture": an original family plus a fleet's units)
from . import omniglot as _omniglot  # noqa: F401  (registers "omniglot")
from . import sensors as _sensors  # noqa: F401
from . import sinusoid as _sinusoid  # noqa: F401  (registers "sinusoid")
from . import table as _table  # noqa: F401  (registers "table", "purpleair", "cmapss")
from . import timeseries as _timeseries  # noqa: F401  (registers "ucr", "ucr-basicmotions", "ucr-wiimote", ...)
from .base import Task, TaskBatch, TaskFamily, family_names, make_family, register_family
from .episodes import EpisodeRows, EpisodicFamily
from .mixture import FleetMixture
from .table import TableFamily, find_data_dir

__all__ = [
    "EpisodeRows",
    "EpisodicFamily",
    "FleetMixture",
    "TableFamily",
    "Task",
    "TaskBatch",
    "TaskFamily",
    "family_names",
    "find_data_dir",
    "make_family",
    "register_family",
]
