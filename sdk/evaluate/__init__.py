"""Meta-evaluation: held-out tasks, error bars, adaptation curves, honest baselines, reports."""

from .compare import Comparison, compare_runs, paired_errors
from .evaluator import EvalSettings, evaluate, format_table
from .stats import mean_ci

__all__ = ["Comparison", "EvalSettings", "compare_runs", "evaluate", "format_table", "mean_ci",
           "paired_errors"]
