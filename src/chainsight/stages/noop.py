"""The no-op stage: what ``current_stage()`` gives outside any stage and when chainsight is off."""

from __future__ import annotations

from typing import Final

from chainsight.stages.stage import Stage

__all__ = ["NOOP_STAGE", "NoopStage"]


class NoopStage(Stage):
    """The stage outside any stage, and when chainsight is off: every verb does nothing.

    A real :class:`Stage` (as OpenTelemetry's ``NonRecordingSpan`` is a ``Span``), so
    ``current_stage()`` needs no cast; it has no span and no state, and overrides every public
    verb and property of ``Stage`` (a test holds the two in step).
    """

    __slots__ = ()

    def __init__(self) -> None:
        """The one instance is :data:`NOOP_STAGE`."""

    def set(self, **attributes: object) -> None:
        """Do nothing."""

    def record_usage(
        self,
        *,
        input_tokens: object = None,
        output_tokens: object = None,
        cached_input_tokens: object = None,
        cache_write_input_tokens: object = None,
        reasoning_output_tokens: object = None,
        model: object = None,
        cache_write_1h_input_tokens: object = None,
    ) -> None:
        """Do nothing."""

    def record_response(self, response: object) -> None:
        """Do nothing."""

    def record_content(
        self,
        *,
        input_messages: object = None,
        output_messages: object = None,
        system_instructions: object = None,
        query: object = None,
        documents: object = None,
    ) -> None:
        """Do nothing."""

    def record_documents(
        self, *, count: object = None, scores: object = None, ids: object = None
    ) -> None:
        """Do nothing."""

    def record_validation(self, *, passed: object, reason: object = None) -> None:
        """Do nothing."""

    def fallback(self, *, to: object, reason: object = None) -> None:
        """Do nothing."""

    @property
    def trace_id(self) -> None:
        """None: there is no span."""
        return None

    @property
    def span_id(self) -> None:
        """None: there is no span."""
        return None

    @property
    def kind(self) -> str:
        """``none``."""
        return "none"

    @property
    def name(self) -> str:
        """``none``."""
        return "none"

    def __repr__(self) -> str:
        return "<chainsight.Stage (none)>"


NOOP_STAGE: Final = NoopStage()
"""What ``current_stage()`` returns outside any stage, and ``stage()`` yields when off."""
