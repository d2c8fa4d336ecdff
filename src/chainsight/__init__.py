"""chainsight: every stage of an AI request chain visible — spans with the fault domain that
failed, Prometheus metrics, cost, dashboards and SLO alerts.

Start with :func:`configure`, mark stages with :func:`traced_stage` or :func:`stage`, and wrap
each unit of work in :func:`request`. See ``docs/api.md``.
"""

from chainsight.config.configure import configure, metrics_address, metrics_app, reset, shutdown
from chainsight.cost.budget import Budget, RedisBudgetStore
from chainsight.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    ChainsightError,
    ConfigurationError,
)
from chainsight.integrations import instrument, uninstrument
from chainsight.stages.faults import Classification, StageFacts, classify
from chainsight.stages.kinds import register_stage_kind
from chainsight.stages.stage import Stage
from chainsight.stages.wrappers import current_stage, request, stage, traced_stage

__all__ = [
    "Budget",
    "BudgetExceeded",
    "BudgetStoreUnavailable",
    "ChainsightError",
    "Classification",
    "ConfigurationError",
    "RedisBudgetStore",
    "Stage",
    "StageFacts",
    "classify",
    "configure",
    "current_stage",
    "instrument",
    "metrics_address",
    "metrics_app",
    "register_stage_kind",
    "request",
    "reset",
    "shutdown",
    "stage",
    "traced_stage",
    "uninstrument",
]

__version__ = "0.1.0.dev0"
