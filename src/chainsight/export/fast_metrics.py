"""prometheus-client's Counter, Gauge and Histogram with a shorter write for labelled children.

chainsight writes 5-10 metric values per stage, always through labelled children it made. The
client's ``Counter.inc`` and ``Histogram.observe`` first check that the metric is not a parent
(two more Python calls on every write), and ``observe`` then finds the bucket with a Python
loop over its 30 bounds. On a 2-core machine those layers were a measurable part of a model
stage's cost (``make bench``: ``cs_model_usage``, ``cs_chain6``); here a labelled child without
an exemplar writes its values directly, and the bucket is found by ``bisect`` (the bounds are
sorted and end in +Inf, so the first bound ``>= amount`` is the one the client's loop stops at).

Every other call (a parent, an unlabelled metric, an exemplar, NaN, a negative counter
increment, a ``mostrecent`` gauge) goes to the client's own method, so behaviour is the
client's. What this relies on (``_value``, ``_sum``, ``_buckets``, ``_upper_bounds``,
``_labelvalues``, the client's methods reproduced) is held against the installed client by
``tests/export/test_fast_metrics.py``, which fails on an upgrade that changes it.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["FastCounter", "FastGauge", "FastHistogram"]


class FastCounter(Counter):
    """A :class:`~prometheus_client.Counter` whose labelled children increment directly."""

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        """Increment by ``amount`` (the client's ``Counter.inc``)."""
        # `not amount >= 0` also sends NaN to the client, which decides what NaN does.
        if exemplar or not self._labelvalues or not amount >= 0:
            super().inc(amount, exemplar)
            return
        self._value.inc(amount)


class FastGauge(Gauge):
    """A :class:`~prometheus_client.Gauge` whose labelled children move directly."""

    def inc(self, amount: float = 1) -> None:
        """Increment by ``amount`` (the client's ``Gauge.inc``)."""
        if self._is_most_recent or not self._labelvalues:
            super().inc(amount)
            return
        self._value.inc(amount)

    def dec(self, amount: float = 1) -> None:
        """Decrement by ``amount`` (the client's ``Gauge.dec``)."""
        if self._is_most_recent or not self._labelvalues:
            super().dec(amount)
            return
        self._value.inc(-amount)


class FastHistogram(Histogram):
    """A :class:`~prometheus_client.Histogram` whose labelled children observe directly."""

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        """Observe ``amount`` (the client's ``Histogram.observe``)."""
        if exemplar or not self._labelvalues or amount != amount:  # noqa: PLR0124 - NaN test
            super().observe(amount, exemplar)
            return
        self._sum.inc(amount)
        self._buckets[bisect_left(self._upper_bounds, amount)].inc(1)
