"""The immutable :class:`Config` snapshot that the request path reads once per stage.

``configure()`` builds a new snapshot and swaps it in with one assignment, so stages in flight
keep the snapshot they started with. Nothing here builds anything: see ``config.build``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from chainsight.cost.budget import BudgetSet
    from chainsight.cost.prices import PriceTable
    from chainsight.export.metrics import Metrics
    from chainsight.export.otlp_metrics import PrometheusOTLPBridge
    from chainsight.export.traces import DroppingBatchProcessor, SwitchableSampler
    from chainsight.stages.faults import Classifier
    from chainsight.stages.redact import Redactor
    from chainsight.stages.spans import SpanStarter

__all__ = ["Config"]


@dataclass(frozen=True, slots=True)
class Config:
    """One immutable snapshot of the resolved settings and what was built from them."""

    version: int
    enabled: bool
    service: str
    environment: str | None
    release: Mapping[str, str]
    release_id: str
    release_attributes: Mapping[str, str]
    tracer: trace.Tracer
    sample_ratio: float
    exporter: str
    metrics: Metrics
    classifiers: tuple[Classifier, ...]
    raise_internal: bool
    prices: PriceTable
    budgets: BudgetSet | None
    redactor: Redactor
    capture: str | None = None
    openinference: bool = False
    log_stages: bool = False
    otlp_bridge: PrometheusOTLPBridge | None = None
    owned_provider: TracerProvider | None = None
    processor: DroppingBatchProcessor | None = None
    sampler: SwitchableSampler | None = None
    batching: tuple[int, int, int] | None = None
    #: How stages start spans of ``tracer`` (``stages.spans.starter_for``, chosen once here).
    start_span: SpanStarter | None = None
