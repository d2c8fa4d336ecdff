"""Budgets with the in-process store: windows, matching, thresholds, admission, validation."""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainsight._names import L_FEATURE, L_MODEL, L_TENANT
from chainsight.cost.budget import ADMISSION_SPENT, BudgetSet
from chainsight.cost.budget_defs import Budget
from chainsight.cost.budget_redis import RedisBudgetStore
from chainsight.cost.budget_store import BudgetCharge, BudgetSlot, InProcessBudgetStore
from chainsight.errors import BudgetExceeded, ChainsightError, ConfigurationError

COPILOT = {L_FEATURE: "copilot", L_TENANT: "acme", L_MODEL: "gpt-4o"}


def ts(when: str) -> float:
    """Epoch seconds of a UTC wall-clock time written as ISO 8601 without zone."""
    return datetime.fromisoformat(when).replace(tzinfo=timezone.utc).timestamp()


class FakeClock:
    """A settable clock for BudgetSet(clock=...)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": ""}, "got ''"),
        ({"name": " copilot"}, "got ' copilot'"),
        ({"name": 7}, "got 7"),
        ({"limit_usd": 0}, "got 0"),
        ({"limit_usd": -5.0}, "got -5.0"),
        ({"limit_usd": math.nan}, "got nan"),
        ({"limit_usd": math.inf}, "got inf"),
        ({"limit_usd": True}, "got True"),
        ({"limit_usd": "10"}, "got '10'"),
        ({"window": "2d"}, "got '2d'"),
        ({"window": "1D"}, "got '1D'"),
        ({"window": 86400}, "got 86400"),
        ({"soft_ratio": 0}, "got 0"),
        ({"soft_ratio": 1.5}, "got 1.5"),
        ({"soft_ratio": math.nan}, "got nan"),
        ({"hard": "yes"}, "hard must be True or False; got 'yes'"),
        ({"fail_closed": 1}, "fail_closed must be True or False; got 1"),
        ({"match": {"featur": "copilot"}}, "cannot match on label 'featur'"),
        ({"match": {"feature": ""}}, "got ''"),
        ({"match": {"feature": 3}}, "got 3"),
        ({"match": ["feature", "copilot"]}, "got ['feature', 'copilot']"),
    ],
)
def test_budget_rejects_bad_configuration_naming_the_value(
    kwargs: dict[str, object], fragment: str
) -> None:
    args: dict[str, object] = {"name": "copilot", "limit_usd": 10.0, "window": "1d"}
    args.update(kwargs)
    with pytest.raises(ConfigurationError) as info:
        Budget(**args)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_thirty_days_is_refused_with_a_pointer_to_the_calendar_month() -> None:
    with pytest.raises(ConfigurationError, match=r"got '30d'.*use '1mo' for the calendar month"):
        Budget("copilot", 10.0, "30d")


def test_window_aliases_are_normalised_and_defaults_hold() -> None:
    budget = Budget("weekly", 70.0, "7d")
    assert budget.window == "1w"
    default = Budget("daily", 10)
    assert (default.window, default.soft_ratio, default.hard, default.fail_closed) == (
        "1d",
        0.8,
        True,
        False,
    )
    assert default.limit_usd == 10.0
    assert isinstance(default.limit_usd, float)
    assert "Budget('daily', limit_usd=10.0, window='1d'" in repr(default)


def test_budget_set_rejects_duplicates_and_foreign_objects() -> None:
    with pytest.raises(ConfigurationError, match="two budgets are named 'a'"):
        BudgetSet([Budget("a", 1.0), Budget("a", 2.0)])
    with pytest.raises(ConfigurationError, match=r"got \{'name': 'a'\}"):
        BudgetSet([{"name": "a"}])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match=r"reservation_timeout .* got 0"):
        BudgetSet([], reservation_timeout=0)


def test_redis_store_configuration_errors_need_no_server() -> None:
    with pytest.raises(ConfigurationError, match=r"got 'http://localhost:6379'"):
        RedisBudgetStore("http://localhost:6379")
    with pytest.raises(ConfigurationError, match="timeout must be greater than 0"):
        RedisBudgetStore("redis://127.0.0.1:1/0", timeout=0)
    with pytest.raises(ConfigurationError, match=r"cooldown .* got -1"):
        RedisBudgetStore("redis://127.0.0.1:1/0", cooldown=-1)
    with pytest.raises(ConfigurationError, match="cannot parse url"):
        RedisBudgetStore("redis://127.0.0.1:notaport/0")


def test_redis_store_without_the_redis_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import redis` raise ImportError, as if it were not installed.
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'chainsight\[redis\]'"):
        RedisBudgetStore("redis://127.0.0.1:6379/0")


# --- windows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "now", "key", "remaining"),
    [
        ("1h", ts("2024-05-01T13:20:00"), "2024-05-01T13", 40 * 60),
        ("1h", ts("2024-05-01T23:59:59"), "2024-05-01T23", 1),
        ("1d", ts("2024-05-01T13:00:00"), "2024-05-01", 11 * 3600),
        ("1d", ts("2024-02-29T00:00:00"), "2024-02-29", 86400),
        # Monday 2024-12-30 opens ISO week 1 of 2025.
        ("1w", ts("2024-12-30T00:00:00"), "2025-W01", 7 * 86400),
        ("1w", ts("2025-01-05T23:00:00"), "2025-W01", 3600),
        ("1w", ts("2024-05-01T12:00:00"), "2024-W18", (4 * 24 + 12) * 3600),
        ("1mo", ts("2024-02-10T00:00:00"), "2024-02", 20 * 86400),
        ("1mo", ts("2023-12-31T12:00:00"), "2023-12", 12 * 3600),
        ("1mo", ts("1969-12-31T12:00:00"), "1969-12", 12 * 3600),
    ],
)
def test_window_key_is_calendar_aligned_in_utc(
    window: str, now: float, key: str, remaining: float
) -> None:
    got_key, got_remaining = Budget("b", 1.0, window).window_key(now)
    assert got_key == key
    assert got_remaining == pytest.approx(remaining)


_LENGTHS = {"1h": (3600, 3600), "1d": (86400, 86400), "1w": (7 * 86400, 7 * 86400)}


@given(
    window=st.sampled_from(["1h", "1d", "1w", "1mo"]),
    seconds=st.integers(min_value=0, max_value=4_000_000_000),
    # Multiples of 1/1024 keep now + remaining exact in binary floating point.
    fraction=st.integers(min_value=0, max_value=1023),
)
def test_window_key_properties(window: str, seconds: int, fraction: int) -> None:
    budget = Budget("b", 1.0, window)
    now = seconds + fraction / 1024
    key, remaining = budget.window_key(now)
    low, high = _LENGTHS.get(window, (28 * 86400, 31 * 86400))
    assert 0 < remaining <= high
    end = now + remaining
    start_of_next = datetime.fromtimestamp(end, tz=timezone.utc)
    assert (start_of_next.minute, start_of_next.second, start_of_next.microsecond) == (0, 0, 0)
    if window != "1h":
        assert start_of_next.hour == 0
    if window == "1w":
        assert start_of_next.weekday() == 0
    if window == "1mo":
        assert start_of_next.day == 1
    # The same window right up to its end, a new one (of a legal length) from its end.
    assert budget.window_key(end - 1 / 1024)[0] == key
    next_key, next_remaining = budget.window_key(end)
    assert next_key != key
    assert low <= next_remaining <= high


@pytest.mark.parametrize(
    ("window", "last_instant", "first_of_next"),
    [
        ("1h", ts("2024-05-01T13:59:59"), ts("2024-05-01T14:00:00")),
        ("1d", ts("2024-05-01T23:59:59"), ts("2024-05-02T00:00:00")),
        ("1w", ts("2024-05-05T23:59:59"), ts("2024-05-06T00:00:00")),  # Sunday → Monday
        ("1mo", ts("2024-01-31T23:59:59"), ts("2024-02-01T00:00:00")),
        ("1mo", ts("2024-12-31T23:59:59"), ts("2025-01-01T00:00:00")),
    ],
)
def test_spend_resets_by_itself_at_the_window_boundary(
    window: str, last_instant: float, first_of_next: float
) -> None:
    clock = FakeClock(last_instant)
    budgets = BudgetSet([Budget("b", 1.0, window)], clock=clock)
    budgets.spend(COPILOT, 1.0)
    assert budgets.check(COPILOT) is not None
    assert budgets.admit(COPILOT).refused is not None
    assert budgets.states()[0].spent_usd == 1.0
    clock.now = first_of_next
    # No operation in between: the gauge and the admission both see an empty new window.
    assert budgets.states()[0].spent_usd == 0.0
    assert budgets.check(COPILOT) is None
    admission = budgets.admit(COPILOT)
    assert admission.refused is None
    admission.settle(0.25)
    assert budgets.states()[0].spent_usd == 0.25


# --- matching -------------------------------------------------------------------------------


def test_matching_requires_every_pair() -> None:
    everything = Budget("all", 1.0)
    copilot_acme = Budget("ca", 1.0, match={"feature": "copilot", "tenant": "acme"})
    assert everything.matches({})
    assert copilot_acme.matches(COPILOT)
    assert not copilot_acme.matches({**COPILOT, L_TENANT: "globex"})
    assert not copilot_acme.matches({L_FEATURE: "copilot"})


def test_spend_goes_to_every_matching_budget_and_only_those() -> None:
    budgets = BudgetSet(
        [
            Budget("copilot", 10.0, match={"feature": "copilot"}),
            Budget("acme", 10.0, match={"tenant": "acme"}),
            Budget("search", 10.0, match={"feature": "search"}),
        ],
        clock=FakeClock(ts("2024-05-01T12:00:00")),
    )
    budgets.spend(COPILOT, 2.5)
    budgets.admit(COPILOT).settle(0.5)
    spent = {state.name: state.spent_usd for state in budgets.states()}
    assert spent == {"copilot": 3.0, "acme": 3.0, "search": 0.0}


# --- hard and soft budgets ------------------------------------------------------------------


def test_hard_budget_refuses_once_spent_and_builds_the_error() -> None:
    budgets = BudgetSet(
        [Budget("copilot", 1.0, "1d", match={"feature": "copilot"})],
        clock=FakeClock(ts("2024-05-01T12:00:00")),
    )
    for _ in range(4):
        admission = budgets.admit(COPILOT)
        assert admission.refused is None
        admission.settle(0.25)
    refused = budgets.admit(COPILOT)
    assert refused.refused is not None
    assert refused.refused.name == "copilot"
    assert refused.reason == ADMISSION_SPENT
    assert refused.spent_usd == 1.0
    error = refused.error()
    assert isinstance(error, BudgetExceeded)
    assert isinstance(error, ChainsightError)
    assert (error.budget, error.spent_usd, error.limit_usd, error.window) == (
        "copilot",
        1.0,
        1.0,
        "1d",
    )
    assert budgets.check(COPILOT) is budgets.budgets[0]
    # Another feature is not limited by this budget.
    assert budgets.admit({L_FEATURE: "search"}).refused is None
    with pytest.raises(ChainsightError, match="admitted call"):
        budgets.admit({L_FEATURE: "search"}).error()


def test_soft_budget_reports_but_never_refuses() -> None:
    budgets = BudgetSet(
        [Budget("soft", 1.0, hard=False)], clock=FakeClock(ts("2024-05-01T00:00:00"))
    )
    budgets.spend(COPILOT, 5.0)
    assert budgets.check(COPILOT) is None
    assert budgets.admit(COPILOT).refused is None
    (state,) = budgets.states()
    assert (state.name, state.spent_usd, state.limit_usd, state.soft_ratio, state.hard) == (
        "soft",
        5.0,
        1.0,
        0.8,
        False,
    )


def test_thresholds_are_logged_once_per_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(ts("2024-05-01T12:00:00"))
    budgets = BudgetSet([Budget("copilot", 10.0, "1d", soft_ratio=0.8)], clock=clock)
    caplog.set_level(logging.INFO, logger="chainsight")

    def messages(fragment: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "chainsight" and fragment in r.getMessage()
        ]

    for _ in range(7):
        budgets.spend(COPILOT, 1.0)
    assert messages("soft threshold") == []
    budgets.spend(COPILOT, 1.0)
    (soft,) = messages("soft threshold")
    assert "'copilot'" in soft
    assert "8.000000 of 10.000000 USD (80%)" in soft
    assert "2024-05-01" in soft
    budgets.spend(COPILOT, 1.0)
    budgets.spend(COPILOT, 1.0)
    budgets.spend(COPILOT, 1.0)
    assert len(messages("soft threshold")) == 1
    (spent,) = messages("is spent")
    assert "refused until the window ends" in spent
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "chainsight")
    # The next day is a new window: crossing again logs again, once.
    clock.now = ts("2024-05-02T01:00:00")
    for _ in range(12):
        budgets.spend(COPILOT, 1.0)
    assert len(messages("soft threshold")) == 2
    assert len(messages("is spent")) == 2
    assert "2024-05-02" in messages("soft threshold")[1]


def test_bad_costs_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    budgets = BudgetSet([Budget("b", 1.0)], clock=FakeClock(ts("2024-05-01T00:00:00")))
    for bad in (-1.0, math.nan, math.inf, "0.5"):
        budgets.spend(COPILOT, bad)  # type: ignore[arg-type]
    assert budgets.states()[0].spent_usd == 0.0
    assert sum("ignored a cost of" in r.getMessage() for r in caplog.records) == 4


# --- reservations ---------------------------------------------------------------------------


def test_in_flight_calls_reserve_the_largest_call_cost() -> None:
    budgets = BudgetSet([Budget("b", 1.0)], clock=FakeClock(ts("2024-05-01T00:00:00")))
    budgets.admit(COPILOT).settle(0.4)  # the largest call so far costs 0.4
    first = budgets.admit(COPILOT)  # 0.4 spent + 0 in flight < 1
    second = budgets.admit(COPILOT)  # 0.4 + 1 x 0.4 < 1
    third = budgets.admit(COPILOT)  # 0.4 + 2 x 0.4 >= 1: the calls in flight may finish it
    assert first.refused is None
    assert second.refused is None
    assert third.refused is not None
    assert third.spent_usd == 0.4
    # A read-only check looks at what is spent, not at what is in flight.
    assert budgets.check(COPILOT) is None
    first.settle(0.4)
    assert budgets.admit(COPILOT).refused is not None  # 0.8 + 1 x 0.4 >= 1
    second.settle(0.4)
    # Three calls were admitted: the total stopped within one call's cost of the limit.
    assert budgets.states()[0].spent_usd == pytest.approx(1.2)
    assert budgets.states()[0].spent_usd < 1.0 + 0.4


def test_settle_releases_the_reservation_once() -> None:
    budgets = BudgetSet([Budget("b", 1.0)], clock=FakeClock(ts("2024-05-01T00:00:00")))
    budgets.spend(COPILOT, 0.5)
    admission = budgets.admit(COPILOT)
    assert budgets.admit(COPILOT).refused is not None  # 0.5 + 1 x 0.5 >= 1
    admission.settle(0.0)  # the call failed: nothing spent, reservation released
    admission.settle(0.3)  # a second settle is ignored
    assert budgets.states()[0].spent_usd == 0.5
    assert budgets.admit(COPILOT).refused is None


def test_refused_admission_reserves_nothing_in_any_budget() -> None:
    clock = FakeClock(ts("2024-05-01T00:00:00"))
    budgets = BudgetSet(
        [Budget("wide", 100.0), Budget("narrow", 1.0, match={"tenant": "acme"})], clock=clock
    )
    budgets.spend(COPILOT, 1.0)
    refused = budgets.admit(COPILOT)
    assert refused.refused is not None
    assert refused.refused.name == "narrow"
    refused.settle(5.0)  # settling a refused call does nothing
    store = budgets.store
    wide_key = budgets.budgets[0].store_key("2024-05-01")
    # If the refused call had reserved in "wide", 99 + 1 x 1.0 in flight would refuse this one.
    store.add([BudgetCharge(wide_key, 98.0, 60.0)], None, clock.now)
    assert store.reserve([BudgetSlot(wide_key, 100.0, 60.0)], "t", clock.now, 60.0)[0] is None


def test_an_unsettled_reservation_expires() -> None:
    clock = FakeClock(ts("2024-05-01T00:00:00"))
    budgets = BudgetSet([Budget("b", 1.0)], clock=clock, reservation_timeout=30.0)
    budgets.spend(COPILOT, 0.6)
    budgets.admit(COPILOT)  # never settled, as if the process died mid-call
    assert budgets.admit(COPILOT).refused is not None
    clock.now += 31
    assert budgets.admit(COPILOT).refused is None


def test_in_process_store_forgets_ended_windows() -> None:
    store = InProcessBudgetStore()
    now = ts("2024-05-01T00:00:00")
    store.add([BudgetCharge("k", 2.0, 10.0)], None, now)
    assert store.spent(["k", "other"], now + 5) == [2.0, 0.0]
    # The key lives until its window ends plus a grace period, then is gone.
    assert store.spent(["k"], now + 10 + 61) == [0.0]
    assert store.add([BudgetCharge("k", 1.0, 10.0)], None, now + 200) == [(0.0, 1.0)]


# --- concurrency ----------------------------------------------------------------------------


def test_many_threads_add_up_exactly() -> None:
    budgets = BudgetSet([Budget("b", 1e9, hard=False)])

    def worker() -> None:
        for _ in range(500):
            budgets.spend(COPILOT, 0.25)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 0.25 is exact in binary, so any interleaving sums to exactly this.
    assert budgets.states()[0].spent_usd == 32 * 500 * 0.25


def test_many_threads_stop_within_one_call_of_a_hard_limit() -> None:
    # Not a multiple of the cost, so calls admitted on a stale read would overshoot visibly.
    limit, cost = 1.005, 0.01
    budgets = BudgetSet([Budget("b", limit)])
    calls: list[int] = []
    start = threading.Barrier(16)

    def worker() -> None:
        made = 0
        start.wait()
        while True:
            admission = budgets.admit(COPILOT)
            if admission.refused is not None:
                break
            time.sleep(0.0005)  # the provider call: the window in which others check
            admission.settle(cost)
            made += 1
        calls.append(made)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spent = budgets.states()[0].spent_usd
    assert spent == pytest.approx(sum(calls) * cost)
    assert limit - 1e-9 <= spent <= limit + cost + 1e-9


def test_states_reads_memory_only_and_covers_every_budget() -> None:
    clock = FakeClock(ts("2024-05-01T00:00:00"))
    budgets = BudgetSet(
        [Budget("a", 1.0), Budget("b", 2.0, "1h", soft_ratio=0.5, hard=False)], clock=clock
    )
    budgets.spend(COPILOT, 0.5)
    assert [(s.name, s.spent_usd, s.limit_usd, s.window) for s in budgets.states()] == [
        ("a", 0.5, 1.0, "1d"),
        ("b", 0.5, 2.0, "1h"),
    ]
    clock.now += timedelta(hours=1).total_seconds()
    assert [s.spent_usd for s in budgets.states()] == [0.5, 0.0]
    budgets.refresh()
    assert [s.spent_usd for s in budgets.states()] == [0.5, 0.0]
    assert budgets.store_errors == 0
    assert budgets.last_error is None
