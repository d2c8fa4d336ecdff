"""Stage verbs: usage, cost roll-up, documents, responses; arbitrary values never raise."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chainsight
from chainsight.testing import Capture, capture

anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50)
    | st.binary(max_size=20)
    | st.builds(object),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=anything, b=anything, c=anything, d=anything, e=anything, f=anything, g=anything)
def test_verbs_never_raise_on_arbitrary_values(
    a: Any, b: Any, c: Any, d: Any, e: Any, f: Any, g: Any
) -> None:
    chainsight.reset()
    capture()
    with (
        chainsight.request("r", tenant=a, feature=b) as req,
        chainsight.stage("model", provider="openai", model="gpt-4o") as s,
    ):
        s.record_usage(
            input_tokens=a,
            output_tokens=b,
            cached_input_tokens=c,
            cache_write_input_tokens=d,
            reasoning_output_tokens=e,
            model=f,
            cache_write_1h_input_tokens=g,
        )
        s.record_response(g)
        s.record_documents(count=a, scores=b, ids=c)
        s.record_validation(passed=d, reason=e)
        s.fallback(to=f, reason=g)
        s.set(x=a, y=g)
        req.set(k=b)


def test_bad_values_are_counted_not_raised(chainsight_capture: Capture) -> None:
    with chainsight.stage("model", provider="openai", model="gpt-4o") as s:
        s.record_usage(input_tokens=-5, output_tokens=True)
        s.record_documents(count="three")
    assert (
        chainsight_capture.metric(
            "chainsight_internal_errors_total", {"where": "invalid_argument:record_usage"}
        )
        == 1.0
    )
    assert (
        chainsight_capture.metric(
            "chainsight_internal_errors_total", {"where": "invalid_argument:record_documents"}
        )
        == 1.0
    )
    attrs = chainsight_capture.stage(kind="model").attributes
    assert "gen_ai.usage.input_tokens" not in attrs


def test_usage_and_cost_roll_up_to_the_request(chainsight_capture: Capture) -> None:
    with chainsight.request("r", tenant="acme", feature="copilot", team="support"):
        for _ in range(2):
            with chainsight.stage("model", provider="openai", model="gpt-4o") as s:
                s.record_usage(input_tokens=1000, output_tokens=500, cached_input_tokens=400)
    models = chainsight_capture.find(kind="model")
    one = float(models[0].attributes["chainsight.cost.usd"])
    # gpt-4o: 600 uncached x 2.50 + 400 cached x 1.25 + 500 out x 10.00, per million tokens.
    assert abs(one - (600 * 2.5 + 400 * 1.25 + 500 * 10.0) / 1e6) < 1e-12
    req = chainsight_capture.stage(kind="request")
    assert req.attributes["chainsight.request.input_tokens"] == 2000
    assert req.attributes["chainsight.request.output_tokens"] == 1000
    assert abs(float(req.attributes["chainsight.request.cost.usd"]) - 2 * one) < 1e-12
    cost = chainsight_capture.metric(
        "chainsight_cost_usd_total",
        {"provider": "openai", "model": "gpt-4o", "feature": "copilot", "tenant": "acme",
         "team": "support"},
    )  # fmt: skip
    assert cost is not None
    assert abs(cost - 2 * one) < 1e-12
    for token_type, expected in (("input", 2000), ("output", 1000), ("cache_read", 800)):
        assert chainsight_capture.metric(
            "chainsight_tokens_total",
            {"provider": "openai", "model": "gpt-4o", "token_type": token_type,
             "feature": "copilot", "tenant": "acme"},
        ) == expected  # fmt: skip
    assert (
        chainsight_capture.metric(
            "chainsight_request_cost_usd_count", {"request": "r", "feature": "copilot"}
        )
        == 1.0
    )


def test_unknown_model_cost_is_unknown_not_zero(chainsight_capture: Capture, caplog: Any) -> None:
    for _ in range(3):
        with chainsight.stage("model", provider="acme-ai", model="mystery-9") as s:
            s.record_usage(input_tokens=10, output_tokens=5)
    spans = chainsight_capture.find(kind="model")
    assert all("chainsight.cost.usd" not in s.attributes for s in spans)
    assert (
        chainsight_capture.metric(
            "chainsight_unpriced_calls_total", {"provider": "acme-ai", "model": "mystery-9"}
        )
        == 3.0
    )
    warnings = [r for r in caplog.records if "mystery-9" in r.getMessage()]
    assert len(warnings) == 1


def test_record_response_openai_and_anthropic_shapes(chainsight_capture: Capture) -> None:
    openai_resp = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "hi"}}],
        "usage": {
            "prompt_tokens": 1000,
            "completion_tokens": 100,
            "prompt_tokens_details": {"cached_tokens": 600},
        },
    }
    anthropic_resp = {
        "id": "msg_1",
        "type": "message",
        "model": "claude-sonnet-4-5",
        "stop_reason": "end_turn",
        "content": [{"type": "text", "text": "hi"}],
        "usage": {
            "input_tokens": 400,
            "output_tokens": 100,
            "cache_read_input_tokens": 600,
            "cache_creation_input_tokens": 0,
        },
    }
    with chainsight.stage("model", name="o", provider="openai", model="gpt-4o") as s:
        s.record_response(openai_resp)
    with chainsight.stage("model", name="a", provider="anthropic", model="claude-sonnet-4-5") as s:
        s.record_response(anthropic_resp)
    o = chainsight_capture.stage(name="o").attributes
    a = chainsight_capture.stage(name="a").attributes
    for attrs in (o, a):
        assert attrs["gen_ai.usage.input_tokens"] == 1000  # OTel: cached tokens included
        assert attrs["gen_ai.usage.cache_read.input_tokens"] == 600
        assert attrs["gen_ai.usage.output_tokens"] == 100
        assert "chainsight.cost.usd" in attrs
    assert o["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert o["gen_ai.response.id"] == "chatcmpl-1"
    assert o["gen_ai.response.finish_reasons"] == ("stop",)


def test_streamed_chunks_accumulate_usage(chainsight_capture: Capture) -> None:
    chunks = [
        {"object": "chat.completion.chunk", "id": "c1", "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]},
        {"object": "chat.completion.chunk", "id": "c1", "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {"object": "chat.completion.chunk", "id": "c1", "model": "gpt-4o-mini", "choices": [],
         "usage": {"prompt_tokens": 50, "completion_tokens": 2}},
    ]  # fmt: skip

    @chainsight.traced_stage("model", provider="openai", model="gpt-4o-mini")
    def stream() -> Any:
        for chunk in chunks:
            chainsight.current_stage().record_response(chunk)
            yield chunk

    assert len(list(stream())) == 3
    attrs = chainsight_capture.stage(kind="model").attributes
    assert attrs["gen_ai.usage.input_tokens"] == 50
    assert attrs["gen_ai.usage.output_tokens"] == 2
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)


def test_unknown_response_shape_is_counted(chainsight_capture: Capture) -> None:
    with chainsight.stage("model", provider="p", model="m") as s:
        s.record_response({"something": "else"})
    assert (
        chainsight_capture.metric(
            "chainsight_internal_errors_total", {"where": "invalid_argument:record_response"}
        )
        == 1.0
    )


def test_documents_health(chainsight_capture: Capture) -> None:
    with chainsight.stage("retrieval", name="kb", system="qdrant") as s:
        s.record_documents(count=3, scores=[0.2, 0.9, 0.5], ids=["a", "b", "a"])
    with chainsight.stage("retrieval", name="kb", system="qdrant") as s:
        s.record_documents(count=0)
    labels = {"stage": "kb", "system": "qdrant"}
    assert chainsight_capture.metric("chainsight_retrieval_empty_total", labels) == 1.0
    assert chainsight_capture.metric("chainsight_retrieval_duplicate_ids_total", labels) == 1.0
    assert chainsight_capture.metric("chainsight_retrieval_documents_count", labels) == 2.0
    assert chainsight_capture.metric("chainsight_retrieval_documents_sum", labels) == 3.0
    first = chainsight_capture.find(kind="retrieval")[0].attributes
    assert first["chainsight.retrieval.top_score"] == 0.9
    assert first["chainsight.retrieval.duplicate_ids"] == 1


def test_hard_budget_refuses_then_degrades(chainsight_capture: Capture) -> None:
    from chainsight import Budget, BudgetExceeded

    chainsight.configure(budgets=[Budget("daily", 0.002, match={"feature": "copilot"})])

    @chainsight.traced_stage("model", provider="openai", model="gpt-4o")
    def call() -> str:
        chainsight.current_stage().record_usage(input_tokens=1000, output_tokens=100)
        return "answer"

    @chainsight.traced_stage(
        "model",
        name="cheap",
        provider="openai",
        model="gpt-4o",
        on_budget_exceeded=lambda: "canned",
    )
    def call_with_fallback() -> str:
        return "answer"

    results = []
    with chainsight.request("r", feature="copilot"):
        results.append(call())  # 0.0035 USD: spends past the limit
    with (
        pytest.raises(BudgetExceeded) as info,
        chainsight.request("r", feature="copilot"),
    ):
        call()
    assert info.value.budget == "daily"
    with chainsight.request("r", feature="copilot"):
        results.append(call_with_fallback())
    with chainsight.request("r", feature="other"):
        results.append(call())  # another feature: not matched by the budget
    assert results == ["answer", "canned", "answer"]
    requests = chainsight_capture.find(kind="request")
    assert [r.outcome for r in requests] == ["ok", "rejected", "degraded", "ok"]
    refused = [s for s in chainsight_capture.find(kind="model") if s.outcome == "rejected"]
    assert len(refused) == 2
    assert (
        chainsight_capture.metric("chainsight_budget_rejections_total", {"budget": "daily"}) == 2.0
    )
    spent = chainsight_capture.metric("chainsight_budget_spent_usd", {"budget": "daily"})
    assert spent is not None
    assert spent > 0.002


def test_responses_api_embedding_and_rerank_costs(chainsight_capture: Capture) -> None:
    responses_api = {
        "id": "resp_1",
        "object": "response",
        "model": "gpt-4o-2024-08-06",
        "status": "completed",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]}],
        "usage": {
            "input_tokens": 2000,
            "input_tokens_details": {"cached_tokens": 1000},
            "output_tokens": 100,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 2100,
        },
    }
    embedding = {
        "object": "list",
        "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "usage": {"prompt_tokens": 50_000, "total_tokens": 50_000},
    }
    rerank = {
        "id": "rr-1",
        "results": [{"index": 0, "relevance_score": 0.9}],
        "meta": {"billed_units": {"search_units": 1}},
    }
    with chainsight.request("r", feature="kb"):
        with chainsight.stage("model", name="chat", provider="openai", model="gpt-4o") as s:
            s.record_response(responses_api)
        with chainsight.stage(
            "embedding", name="embed", provider="openai", model="text-embedding-3-small"
        ) as s:
            s.record_response(embedding)
        with chainsight.stage("rerank", name="rr", provider="cohere", model="rerank-v4.0-pro") as s:
            s.record_response(rerank)

    def cost(name: str) -> float:
        return float(chainsight_capture.stage(name=name).attributes["chainsight.cost.usd"])

    # gpt-4o: 1000 uncached x 2.50 + 1000 cached x 1.25 + 100 out x 10.00 per million.
    assert abs(cost("chat") - (1000 * 2.5 + 1000 * 1.25 + 100 * 10.0) / 1e6) < 1e-12
    assert abs(cost("embed") - 50_000 * 0.02 / 1e6) < 1e-12
    assert abs(cost("rr") - 2.5 / 1000) < 1e-12  # one search at 2.50 USD per 1K searches
    total = float(
        chainsight_capture.stage(kind="request").attributes["chainsight.request.cost.usd"]
    )
    assert abs(total - (cost("chat") + cost("embed") + cost("rr"))) < 1e-12


def test_budget_hook_serves_streams_and_model_from_usage_is_charged(
    chainsight_capture: Capture,
) -> None:
    from chainsight import Budget

    chainsight.configure(budgets=[Budget("gpt4o", 0.001, match={"model": "gpt-4o"})])

    @chainsight.traced_stage("model", provider="openai")  # the model is known only from usage
    def call() -> None:
        chainsight.current_stage().record_usage(
            input_tokens=1000, output_tokens=100, model="gpt-4o"
        )

    call()
    spent = chainsight_capture.metric("chainsight_budget_spent_usd", {"budget": "gpt4o"})
    assert spent is not None
    assert spent > 0.001

    @chainsight.traced_stage(
        "model", provider="openai", model="gpt-4o", on_budget_exceeded=lambda: ["canned"]
    )
    def stream() -> Any:
        yield "from the provider"

    assert list(stream()) == ["canned"]
    assert chainsight_capture.find(kind="model")[-1].outcome == "rejected"


def test_a_bad_request_label_is_counted_once(chainsight_capture: Capture) -> None:
    with chainsight.request("r", tenant=object()):  # type: ignore[arg-type]
        pass
    assert (
        chainsight_capture.metric(
            "chainsight_internal_errors_total", {"where": "invalid_argument:request"}
        )
        == 1.0
    )
    assert "chainsight.tenant" not in chainsight_capture.stage(kind="request").attributes


def test_the_stage_owns_its_usage_record(chainsight_capture: Capture) -> None:
    # Nothing recorded, nothing allocated: the usage record appears with the first record.
    with chainsight.request("r") as req, chainsight.stage("tool") as plain:
        assert plain.usage is None
        assert req.usage is None
    with (
        chainsight.request("r") as req,
        chainsight.stage("model", provider="openai", model="gpt-4o") as model,
    ):
        model.record_usage(input_tokens=100, output_tokens=20, cached_input_tokens=40)
        model.record_usage(input_tokens=10, output_tokens=2, model="gpt-4o-mini")
        usage = model.usage
        assert usage is not None
        assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (110, 22, 40)
        assert usage.recorded
        assert usage.model == "gpt-4o-mini"
        assert usage.priced
        assert usage.own_cost == usage.cost_usd > 0
        # The request holds the totals of its stages, without having recorded usage itself.
        totals = req.usage
        assert totals is not None
        assert (totals.input_tokens, totals.output_tokens) == (110, 22)
        assert totals.cost_usd == usage.cost_usd
        assert not totals.recorded
    last_request = chainsight_capture.find(kind="request")[-1]
    assert last_request.attributes["chainsight.request.input_tokens"] == 110


def test_usage_metrics_add_up_whichever_children_a_call_needs(chainsight_capture: Capture) -> None:
    # The children of a (stage, model, provider, request) are remembered after the first call;
    # a later call needing one not made yet (cache reads, an unpriced model) must still record
    # everything exactly once.
    @chainsight.traced_stage("model", provider="openai", model="gpt-4o")
    def call(**usage: Any) -> None:
        chainsight.current_stage().record_usage(**usage)

    with chainsight.request("r", feature="f", tenant="t"):
        call(input_tokens=100, output_tokens=10)
        call(input_tokens=100, output_tokens=10)
        call(input_tokens=100, output_tokens=10, cached_input_tokens=40)
        call(input_tokens=100, output_tokens=10, cached_input_tokens=40, model="no-such-model")
        call(output_tokens=5)
    labels = {"provider": "openai", "feature": "f", "tenant": "t"}
    totals = {
        token_type: chainsight_capture.metric(
            "chainsight_tokens_total", {**labels, "token_type": token_type}
        )
        for token_type in ("input", "output", "cache_read")
    }
    assert totals == {"input": 400, "output": 45, "cache_read": 80}
    histogram = chainsight_capture.metric(
        "gen_ai_client_token_usage_count", {"gen_ai_token_type": "input"}
    )
    assert histogram == 4
    priced = chainsight_capture.metric("chainsight_cost_usd_total", {"model": "gpt-4o"})
    assert priced is not None
    assert (
        abs(
            priced
            - (2 * (100 * 2.5 + 10 * 10.0) + (60 * 2.5 + 40 * 1.25 + 10 * 10.0) + 5 * 10.0) / 1e6
        )
        < 1e-12
    )
