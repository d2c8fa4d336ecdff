"""Every exception chainsight raises on purpose, in one module.

Run-time problems inside chainsight never raise into the application: these are for
configuration mistakes (raised early, at ``configure()`` or decoration time), for the one
deliberate refusal on the request path (:class:`BudgetExceeded`), and for the tools.

The tree::

    ChainsightError
    ├── ConfigurationError (also a ValueError)   a setting, decorator argument or file is unusable
    ├── BudgetExceeded                           a hard budget refused a model stage
    ├── BudgetStoreUnavailable                   the shared budget store (Redis) did not answer
    └── TriageError                              ``chainsight triage`` cannot run (exit 2)
"""

from __future__ import annotations

__all__ = [
    "BudgetExceeded",
    "BudgetStoreUnavailable",
    "ChainsightError",
    "ConfigurationError",
    "TriageError",
]


class ChainsightError(Exception):
    """Base class of every exception chainsight raises on purpose."""


class ConfigurationError(ChainsightError, ValueError):
    """A value given to ``configure()``, a decorator or a constructor is not usable.

    The message says what was given, what was expected, and how to fix it.
    """


class BudgetExceeded(ChainsightError):
    """A hard budget is spent: the model stage was refused before it called the provider."""

    def __init__(self, budget: str, spent_usd: float, limit_usd: float, window: str) -> None:
        self.budget = budget
        self.spent_usd = spent_usd
        self.limit_usd = limit_usd
        self.window = window
        super().__init__(
            f"budget {budget!r} is spent: {spent_usd:.6f} USD of {limit_usd:.6f} USD in the "
            f"current {window} window; the stage was refused before calling the provider"
        )


class BudgetStoreUnavailable(ChainsightError):
    """The budget store could not be reached; the budget set fails open or closed."""


class TriageError(ChainsightError):
    """Triage cannot run: bad arguments, unreadable input, or Prometheus failed us (exit 2)."""
