"""What the vector-store integrations share: recording the hits of one query."""

from __future__ import annotations

import math
from typing import Any

from chainsight.stages.stage import Stage

__all__ = ["record_hits"]


def record_hits(stage: Stage, hits: list[Any]) -> None:
    """Record scored points (qdrant ``ScoredPoint``-like: ``id``, ``score``) as documents."""
    scores = [
        float(h.score)
        for h in hits
        if type(getattr(h, "score", None)) in (int, float) and math.isfinite(h.score)
    ]
    ids = [h.id for h in hits if isinstance(getattr(h, "id", None), (str, int))]
    stage.record_documents(count=len(hits), scores=scores, ids=ids)
