"""Every span attribute, metric and label name chainsight emits, as ``Final`` constants.

Sources: the OpenTelemetry GenAI semantic conventions (``gen_ai.*``; the PyPI
``opentelemetry-semantic-conventions`` package marks these deprecated, so we define the strings
here), OpenInference 0.1.x, and Prometheus naming practice. These names are a contract: dashboards,
alert rules and users' queries depend on them. Change one only with a CHANGELOG entry.
"""

from __future__ import annotations

from typing import Final

# --- OpenTelemetry GenAI semantic conventions -------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
# The v1.41-era name of the same count (semantic-conventions-genai#440 renamed it), still what
# Phoenix and the opentelemetry-semantic-conventions package read: emitted beside the current
# name (docs/conventions.md, "Two generations of names").
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_PROMPT_NAME: Final = "gen_ai.prompt.name"
GEN_AI_PROMPT_VERSION: Final = "gen_ai.prompt.version"
GEN_AI_DATA_SOURCE_ID: Final = "gen_ai.data_source.id"
GEN_AI_RETRIEVAL_TOP_K: Final = "gen_ai.retrieval.top_k"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"
GEN_AI_RETRIEVAL_QUERY_TEXT: Final = "gen_ai.retrieval.query.text"
GEN_AI_RETRIEVAL_DOCUMENTS: Final = "gen_ai.retrieval.documents"
GEN_AI_EVALUATION_RESULT_EVENT: Final = "gen_ai.evaluation.result"
GEN_AI_EVALUATION_NAME: Final = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_LABEL: Final = "gen_ai.evaluation.score.label"
GEN_AI_EVALUATION_EXPLANATION: Final = "gen_ai.evaluation.explanation"

DB_SYSTEM_NAME: Final = "db.system.name"
DB_COLLECTION_NAME: Final = "db.collection.name"
DB_OPERATION_NAME: Final = "db.operation.name"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"

# Resource attributes.
SERVICE_NAME: Final = "service.name"
SERVICE_VERSION: Final = "service.version"
DEPLOYMENT_ENVIRONMENT_NAME: Final = "deployment.environment.name"

# --- chainsight's own span attributes ---------------------------------------------------------
# No GenAI convention splits cache writes by TTL: the one-hour part (a part of
# gen_ai.usage.cache_write.input_tokens) gets a name of ours.
CS_USAGE_CACHE_WRITE_1H_INPUT_TOKENS: Final = "chainsight.usage.cache_creation_1h.input_tokens"
CS_STAGE_KIND: Final = "chainsight.stage.kind"
CS_STAGE_NAME: Final = "chainsight.stage.name"
CS_OUTCOME: Final = "chainsight.outcome"
CS_FAULT: Final = "chainsight.fault"
CS_ERROR_ORIGIN: Final = "chainsight.error.origin"
CS_RELEASE_ID: Final = "chainsight.release.id"
CS_RELEASE_PREFIX: Final = "chainsight.release."
CS_COST_USD: Final = "chainsight.cost.usd"
CS_REQUEST_NAME: Final = "chainsight.request.name"
CS_REQUEST_COST_USD: Final = "chainsight.request.cost.usd"
CS_REQUEST_INPUT_TOKENS: Final = "chainsight.request.input_tokens"
CS_REQUEST_OUTPUT_TOKENS: Final = "chainsight.request.output_tokens"
CS_TENANT: Final = "chainsight.tenant"
CS_FEATURE: Final = "chainsight.feature"
CS_TEAM: Final = "chainsight.team"
CS_FALLBACK_TO: Final = "chainsight.fallback.to"
CS_FALLBACK_REASON: Final = "chainsight.fallback.reason"
CS_RETRIEVAL_DOCUMENT_COUNT: Final = "chainsight.retrieval.document_count"
CS_RETRIEVAL_TOP_SCORE: Final = "chainsight.retrieval.top_score"
CS_RETRIEVAL_DUPLICATE_IDS: Final = "chainsight.retrieval.duplicate_ids"
CS_VALIDATION_PASSED: Final = "chainsight.validation.passed"
CS_VALIDATION_REASON: Final = "chainsight.validation.reason"
CS_VALIDATOR: Final = "chainsight.validator"
# Deprecated for gen_ai.response.time_to_first_chunk (same value); kept one release for queries.
CS_TTFC_SECONDS: Final = "chainsight.time_to_first_chunk_seconds"
CS_STREAM_CHUNKS: Final = "chainsight.stream.chunks"
CS_BUDGET: Final = "chainsight.budget"

# Span event names.
# Ours, not the conventions' (they define no such event): it marks when the first chunk came.
EVENT_FIRST_CHUNK: Final = "chainsight.first_chunk"
EVENT_FALLBACK: Final = "chainsight.fallback"

# --- OpenInference (optional dual emission) ---------------------------------------------------
OI_SPAN_KIND: Final = "openinference.span.kind"
OI_LLM_TOKEN_COUNT_PROMPT: Final = "llm.token_count.prompt"
OI_LLM_TOKEN_COUNT_COMPLETION: Final = "llm.token_count.completion"
OI_LLM_TOKEN_COUNT_TOTAL: Final = "llm.token_count.total"
OI_LLM_COST_TOTAL: Final = "llm.cost.total"
OI_LLM_MODEL_NAME: Final = "llm.model_name"
OI_LLM_REQUEST_MODEL_NAME: Final = "llm.request.model_name"
OI_LLM_RESPONSE_MODEL_NAME: Final = "llm.response.model_name"
OI_LLM_PROVIDER: Final = "llm.provider"
OI_LLM_SYSTEM: Final = "llm.system"
OI_LLM_FINISH_REASON: Final = "llm.finish_reason"
OI_LLM_TOKEN_COUNT_CACHE_READ: Final = "llm.token_count.prompt_details.cache_read"
OI_LLM_TOKEN_COUNT_CACHE_WRITE: Final = "llm.token_count.prompt_details.cache_write"
OI_LLM_TOKEN_COUNT_REASONING: Final = "llm.token_count.completion_details.reasoning"
OI_LLM_INPUT_MESSAGES: Final = "llm.input_messages"
OI_LLM_OUTPUT_MESSAGES: Final = "llm.output_messages"
OI_EMBEDDING_MODEL_NAME: Final = "embedding.model_name"
OI_INPUT_VALUE: Final = "input.value"
OI_INPUT_MIME_TYPE: Final = "input.mime_type"
OI_OUTPUT_VALUE: Final = "output.value"
OI_OUTPUT_MIME_TYPE: Final = "output.mime_type"
OI_RETRIEVAL_DOCUMENTS: Final = "retrieval.documents"
OI_RERANKER_QUERY: Final = "reranker.query"
OI_RERANKER_MODEL_NAME: Final = "reranker.model_name"
OI_RERANKER_TOP_K: Final = "reranker.top_k"
OI_RERANKER_OUTPUT_DOCUMENTS: Final = "reranker.output_documents"
OI_TOOL_NAME: Final = "tool.name"
OI_PROMPT_TEMPLATE_VERSION: Final = "llm.prompt_template.version"
OI_SESSION_ID: Final = "session.id"
OI_MIME_JSON: Final = "application/json"
OI_MIME_TEXT: Final = "text/plain"

# --- Fault domains and outcomes ---------------------------------------------------------------
FAULT_APP: Final = "app"
FAULT_MODEL: Final = "model"
FAULT_VECTOR_STORE: Final = "vector_store"
FAULT_PROVIDER: Final = "provider"
FAULTS: Final = (FAULT_APP, FAULT_MODEL, FAULT_VECTOR_STORE, FAULT_PROVIDER)
NO_FAULT: Final = "none"

OUTCOME_OK: Final = "ok"
OUTCOME_ERROR: Final = "error"
OUTCOME_DEGRADED: Final = "degraded"
OUTCOME_CANCELLED: Final = "cancelled"
OUTCOME_REJECTED: Final = "rejected"
OUTCOMES: Final = (OUTCOME_OK, OUTCOME_ERROR, OUTCOME_DEGRADED, OUTCOME_CANCELLED, OUTCOME_REJECTED)

# Low-cardinality error.type values.
ERR_TIMEOUT: Final = "timeout"
ERR_RATE_LIMITED: Final = "rate_limited"
ERR_CONNECTION: Final = "connection"
ERR_SERVER_ERROR: Final = "server_error"
ERR_BAD_REQUEST: Final = "bad_request"
ERR_AUTH: Final = "auth"
ERR_NOT_FOUND: Final = "not_found"
ERR_CONTEXT_LENGTH: Final = "context_length"
ERR_VALIDATION_FAILED: Final = "validation_failed"
ERR_EMPTY_OUTPUT: Final = "empty_output"
ERR_CONTENT_FILTER: Final = "content_filter"
ERR_MALFORMED_OUTPUT: Final = "malformed_output"
ERR_BUDGET_EXCEEDED: Final = "budget_exceeded"

# --- Prometheus metrics -----------------------------------------------------------------------
# Family names as prometheus-client takes them (it appends _total/_bucket/... itself).
M_GEN_AI_OPERATION_DURATION: Final = "gen_ai_client_operation_duration_seconds"
M_GEN_AI_TOKEN_USAGE: Final = "gen_ai_client_token_usage"
M_GEN_AI_TTFC: Final = "gen_ai_client_operation_time_to_first_chunk_seconds"
M_REQUESTS: Final = "chainsight_requests"  # exposed as chainsight_requests_total
M_REQUEST_DURATION: Final = "chainsight_request_duration_seconds"
M_STAGE_DURATION: Final = "chainsight_stage_duration_seconds"
M_STAGE_ERRORS: Final = "chainsight_stage_errors"
M_FALLBACKS: Final = "chainsight_fallbacks"
M_TOKENS: Final = "chainsight_tokens"
M_COST_USD: Final = "chainsight_cost_usd"
M_REQUEST_COST_USD: Final = "chainsight_request_cost_usd"
M_UNPRICED_CALLS: Final = "chainsight_unpriced_calls"
M_RETRIEVAL_DOCUMENTS: Final = "chainsight_retrieval_documents"
M_RETRIEVAL_EMPTY: Final = "chainsight_retrieval_empty"
M_RETRIEVAL_DUPLICATES: Final = "chainsight_retrieval_duplicate_ids"
M_RETRIEVAL_TOP_SCORE: Final = "chainsight_retrieval_top_score"
M_VALIDATIONS: Final = "chainsight_validations"
M_BUDGET_SPENT: Final = "chainsight_budget_spent_usd"
M_BUDGET_LIMIT: Final = "chainsight_budget_limit_usd"
M_BUDGET_SOFT_RATIO: Final = "chainsight_budget_soft_ratio"
M_BUDGET_REJECTIONS: Final = "chainsight_budget_rejections"
M_RELEASE_INFO: Final = "chainsight_release"  # exposed as chainsight_release_info
M_IN_FLIGHT: Final = "chainsight_in_flight_requests"
M_INTERNAL_ERRORS: Final = "chainsight_internal_errors"
M_EXPORT_FAILURES: Final = "chainsight_export_failures"
M_LABEL_OVERFLOW: Final = "chainsight_label_overflow"

# Label names.
L_REQUEST: Final = "request"
L_FEATURE: Final = "feature"
L_TENANT: Final = "tenant"
L_TEAM: Final = "team"
L_OUTCOME: Final = "outcome"
L_FAULT: Final = "fault"
L_RELEASE: Final = "release"
L_STAGE: Final = "stage"
L_KIND: Final = "kind"
L_SYSTEM: Final = "system"
L_ERROR_TYPE: Final = "error_type"
L_TO: Final = "to"
L_REASON: Final = "reason"
L_PROVIDER: Final = "provider"
L_MODEL: Final = "model"
L_TOKEN_TYPE: Final = "token_type"
L_VALIDATOR: Final = "validator"
L_RESULT: Final = "result"
L_BUDGET: Final = "budget"
L_WHERE: Final = "where"
L_SIGNAL: Final = "signal"
L_LABEL: Final = "label"
L_SERVICE: Final = "service"
L_ENVIRONMENT: Final = "environment"
L_GEN_AI_OPERATION_NAME: Final = "gen_ai_operation_name"
L_GEN_AI_PROVIDER_NAME: Final = "gen_ai_provider_name"
L_GEN_AI_REQUEST_MODEL: Final = "gen_ai_request_model"
L_GEN_AI_RESPONSE_MODEL: Final = "gen_ai_response_model"
L_GEN_AI_TOKEN_TYPE: Final = "gen_ai_token_type"
L_GEN_AI_ERROR_TYPE: Final = "error_type"

OVERFLOW_VALUE: Final = "__other__"

# Token types used in chainsight_tokens_total{token_type}.
TOKEN_INPUT: Final = "input"
TOKEN_OUTPUT: Final = "output"
TOKEN_CACHE_READ: Final = "cache_read"
TOKEN_CACHE_WRITE: Final = "cache_write"
TOKEN_REASONING: Final = "reasoning"

# GenAI semconv bucket boundaries (explicit bucket advice in the spec).
OPERATION_DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TOKEN_USAGE_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
# chainsight's own stage and request latency buckets: LLM chains run from milliseconds to minutes.
# No two neighbouring bounds are more than 1.5x apart from 5 ms to 80 s, so a 2x latency change
# moves a histogram_quantile estimate by at least ~1.6x anywhere in 5 ms - 30 s (doubling or
# 1-2.5-5 bounds can show it as 1.04x). Every earlier bound is kept (1.0, 2.5, 10.0 are latency
# SLO thresholds matched as le="1.0"), so no rule or dashboard loses its bucket. See
# docs/metrics.md#buckets for the series count, and chainsight.export.buckets for the resolution.
LATENCY_BUCKETS: Final = (
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.35,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    3.5,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    60.0,
    80.0,
)
# Sub-cent costs are common: buckets from a hundredth of a cent to 10 USD.
COST_BUCKETS: Final = (
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
DOCUMENT_COUNT_BUCKETS: Final = (0, 1, 2, 3, 5, 8, 10, 20, 50, 100)
SCORE_BUCKETS: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

# Environment variables read by chainsight itself (the OTEL_* ones are read by the SDK too).
ENV_ENABLED: Final = "CHAINSIGHT_ENABLED"
ENV_SERVICE: Final = "CHAINSIGHT_SERVICE"
ENV_ENVIRONMENT: Final = "CHAINSIGHT_ENVIRONMENT"
ENV_EXPORTER: Final = "CHAINSIGHT_EXPORTER"
ENV_OTLP_ENCODER: Final = "CHAINSIGHT_OTLP_ENCODER"
ENV_SAMPLE_RATIO: Final = "CHAINSIGHT_SAMPLE_RATIO"
ENV_SHUTDOWN_TIMEOUT: Final = "CHAINSIGHT_SHUTDOWN_TIMEOUT"
ENV_RAISE_INTERNAL: Final = "CHAINSIGHT_RAISE_INTERNAL_ERRORS"
ENV_OTEL_SDK_DISABLED: Final = "OTEL_SDK_DISABLED"
ENV_OTEL_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"
ENV_OTEL_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_OTEL_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_OTEL_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENV_OTEL_TRACES_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
ENV_CAPTURE_CONTENT: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
ENV_BSP_MAX_QUEUE_SIZE: Final = "OTEL_BSP_MAX_QUEUE_SIZE"
ENV_BSP_SCHEDULE_DELAY: Final = "OTEL_BSP_SCHEDULE_DELAY"
ENV_BSP_MAX_EXPORT_BATCH_SIZE: Final = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
ENV_MULTIPROC_DIR: Final = "PROMETHEUS_MULTIPROC_DIR"
