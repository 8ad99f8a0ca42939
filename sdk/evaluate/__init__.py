"""Meta-evaluation: held-out tasks, error bars, adaptation curves, honest baselines, reports."""

from .evaluator import EvalSettings, evaluate, format_table
from .stats import mean_ci

__all__ = ["EvalSettings", "evaluate", "format_table", "mean_ci"]
