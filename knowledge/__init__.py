"""The knowledge base: what a fleet of devices learned, ingested from their journals (server side).

``KnowledgeBase`` (SQLAlchemy Core; SQLite by default, PostgreSQL for a fleet) stores runs, bundles and their
aliases, devices, units, adaptations, checks, deployments, evaluations and alerts; it keeps lineage (unit ->
adaptations -> bundle -> run -> data hashes) and exports the fleet as a per-unit table the ``table`` family reads.
It imports numpy, SQLAlchemy, Alembic, ``metaedge.runtime`` and ``metaedge.devices``; never torch, ``sdk`` or
``export``.
"""

from .errors import KnowledgeError
from .rows import (
                   AdaptationRow,
                   AlertRow,
                   BundleInfo,
                   BundleLineage,
                   CheckRow,
                   DataFile,
                   EvaluationRow,
                   FileIngest,
                   IngestResult,
                   Lineage,
                   RunInfo,
                   UnitDetail,
                   UnitSummary,
)
from .store import CANDIDATE, CHAMPION, KnowledgeBase

__all__ = ["CANDIDATE", "CHAMPION", "AdaptationRow", "AlertRow", "BundleInfo", "BundleLineage", "CheckRow",
           "DataFile", "EvaluationRow", "FileIngest", "IngestResult", "KnowledgeBase", "KnowledgeError", "Lineage",
           "RunInfo", "UnitDetail", "UnitSummary"]
