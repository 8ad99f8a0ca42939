"""Adaptation specs: which parameters move during the inner loop (and on the device)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from ...errors import InputError

NAMED_SPECS = ("all", "head", "biases")


@dataclass(frozen=True)
class AdaptSpec:
    """Selects adapted parameters by name.

    ``"all"``: every parameter; ``"head"``: the output layer ``head.*`` and the linear ``skip.*`` path
    if any (ANIL); ``"biases"``: every ``*.bias`` (TinyTL-style); anything else is a comma-separated
    list of glob patterns matched against parameter names, e.g. ``"head.*,body.2.bias"``.
    """

    spec: str = "all"

    def select(self, names: list[str]) -> list[str]:
        """The adapted subset of ``names``, in their original order; raises if it is empty."""
        if self.spec == "all":
            chosen = list(names)
        elif self.spec == "head":
            chosen = [n for n in names if n.startswith(("head.", "skip."))]
        elif self.spec == "biases":
            chosen = [n for n in names if n.endswith(".bias")]
        else:
            patterns = [p.strip() for p in self.spec.split(",") if p.strip()]
            chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not chosen:
            raise InputError(
                f"adaptation spec {self.spec!r} selects no parameter; parameter names are: {', '.join(names)}"
            )
        return chosen
