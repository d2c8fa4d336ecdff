"""chainsight: every stage of an AI request chain visible — spans with the fault domain that
failed, Prometheus metrics, cost, dashboards and SLO alerts.

Start with :func:`configure`, mark stages with :func:`traced_stage` or :func:`stage`, and wrap
each unit of work in :func:`request`. See ``docs/api.md``.
"""

from chainsight._budget import Budget, RedisBudgetStore
from chainsight._config import configure, reset, shutdown
from chainsight._errors import BudgetExceeded, ChainsightError, ConfigurationError
from chainsight._metrics import metrics_app
from chainsight._stage import (
    Stage,
    current_stage,
    register_stage_kind,
    request,
    stage,
    traced_stage,
)

__all__ = [
    "Budget",
    "BudgetExceeded",
    "ChainsightError",
    "ConfigurationError",
    "RedisBudgetStore",
    "Stage",
    "configure",
    "current_stage",
    "metrics_app",
    "register_stage_kind",
    "request",
    "reset",
    "shutdown",
    "stage",
    "traced_stage",
]

__version__ = "0.1.0.dev0"
