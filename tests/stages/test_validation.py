"""``record_validation``: the span's attributes and evaluation events, and the counter, whether
the event's attributes are made for the call or shared from the spec's memo."""

from __future__ import annotations

import chainsight
from chainsight.testing import Capture


def _events(stage: object) -> list[tuple[str, dict[str, object]]]:
    span = stage.span  # type: ignore[attr-defined]
    return [(e.name, dict(e.attributes or {})) for e in span.events]


def test_every_stage_of_a_spec_gets_its_own_event_and_attributes(
    chainsight_capture: Capture,
) -> None:
    for passed in (True, True, False, True):  # the second of each result reuses the memo
        with chainsight.stage("validation", name="check", validator="schema") as v:
            v.record_validation(passed=passed)
    stages = chainsight_capture.find(kind="validation")
    assert [s.attributes["chainsight.validation.passed"] for s in stages] == [
        True,
        True,
        False,
        True,
    ]
    assert [_events(s) for s in stages] == [
        [
            (
                "gen_ai.evaluation.result",
                {"gen_ai.evaluation.name": "schema", "gen_ai.evaluation.score.label": label},
            )
        ]
        for label in ("pass", "pass", "fail", "pass")
    ]
    assert [s.outcome for s in stages] == ["ok", "ok", "error", "ok"]
    # The short way ran: one immutable attribute set per result, shared by its events.
    shared = [s.span.events[0].attributes for s in stages]  # type: ignore[attr-defined]
    assert shared[0] is shared[1] is shared[3]
    assert shared[2] is not shared[0]
    labels = {"stage": "check", "validator": "schema"}
    assert (
        chainsight_capture.metric("chainsight_validations_total", {**labels, "result": "passed"})
        == 3
    )
    assert (
        chainsight_capture.metric("chainsight_validations_total", {**labels, "result": "failed"})
        == 1
    )


def test_later_checks_on_one_stage_win_and_a_reason_stays(chainsight_capture: Capture) -> None:
    with chainsight.stage("validation", name="check") as v:
        v.record_validation(passed=False, reason="missing field 'answer'")
        v.record_validation(passed=True)
    stage = chainsight_capture.stage(kind="validation")
    # As set_attributes would leave them: the later value wins, the earlier reason stays.
    assert stage.attributes["chainsight.validation.passed"] is True
    assert stage.attributes["chainsight.validation.reason"] == "missing field 'answer'"
    assert [attrs["gen_ai.evaluation.score.label"] for _name, attrs in _events(stage)] == [
        "fail",
        "pass",
    ]
    assert _events(stage)[0][1]["gen_ai.evaluation.explanation"] == "missing field 'answer'"
    assert stage.outcome == "ok"


def test_a_check_after_the_stage_ended_records_no_attribute(chainsight_capture: Capture) -> None:
    with chainsight.stage("validation", name="late") as v:
        pass
    v.record_validation(passed=False)
    stage = chainsight_capture.stage(kind="validation")
    assert "chainsight.validation.passed" not in stage.attributes
    assert _events(stage) == []
