"""Task families: sinusoid benchmark, sensor physics, per-unit tables, and user-registered families."""

from . import sensors as _sensors  # noqa: F401
from . import sinusoid as _sinusoid  # noqa: F401  (registers "sinusoid")
from . import table as _table  # noqa: F401  (registers "table", "purpleair", "cmapss")
from .base import Task, TaskBatch, TaskFamily, family_names, make_family, register_family
from .table import TableFamily, find_data_dir

__all__ = [
    "TableFamily",
    "Task",
    "TaskBatch",
    "TaskFamily",
    "family_names",
    "find_data_dir",
    "make_family",
    "register_family",
]
