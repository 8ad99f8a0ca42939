"""Meta-evaluation: held-out tasks, error bars, adaptation curves, honest baselines."""

from .regression import EvalSettings, evaluate_regression, format_table
from .stats import mean_ci

__all__ = ["EvalSettings", "evaluate_regression", "format_table", "mean_ci"]
