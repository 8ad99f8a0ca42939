"""The knowledge base's error type: bad input (an unknown unit or bundle, a missing schema), one sentence."""

from __future__ import annotations

from ..errors import InputError


class KnowledgeError(InputError):
    """A knowledge-base request that cannot be served as given: the message says what was wrong and what to do."""
