"""Outcome and fault-domain classification: an exception raised in a stage -> (fault, error type).

The exception chain is walked from the raised exception inwards (``__cause__``, else
``__context__`` unless ``raise ... from None`` suppressed it; at most :data:`CHAIN_LIMIT` links,
each once) and the first link the table in ``fault_table`` recognises decides. A remote failure
(timeout, 429, 5xx, connection) goes to the stage's ``component=`` if given, else to the domain
of the library that raised it (OpenAI's -> provider, Qdrant's -> vector_store), else to the
stage kind's remote component. Nothing here imports a client library. See ``docs/faults.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from chainsight import _names as n
from chainsight._text import shown
from chainsight.errors import ConfigurationError
from chainsight.stages import fault_table as _table
from chainsight.stages.kinds import kind_info

__all__ = [
    "CHAIN_LIMIT",
    "Classification",
    "Classifier",
    "Origin",
    "StageFacts",
    "classify",
    "classify_chain",
    "error_type_name",
    "exception_chain",
    "is_cancellation",
]

#: How many links of an exception chain are looked at, the raised exception included.
CHAIN_LIMIT: Final = 8


class Classification(NamedTuple):
    """Where an error belongs: the fault domain and a low-cardinality error type."""

    fault: str
    error_type: str


class Origin(NamedTuple):
    """Where an error started: the stage name, its fault and error type."""

    stage: str
    fault: str
    error_type: str


class StageFacts(str):
    """What a classification rule knows about the stage that failed.

    It *is* the stage kind as a string (``facts == "retrieval"``), so rules written for the
    former ``rule(exception, stage_kind)`` signature keep working; the other facts are
    attributes: ``kind``, ``name``, ``system``, ``provider``, ``component`` (as given to the
    stage) and ``remote``, the fault domain its remote failures belong to when the library that
    failed does not say (``component`` if given, else the kind's). Build one to call
    :func:`classify` yourself: ``StageFacts("model", provider="openai")``.
    """

    kind: str
    name: str
    system: str | None
    provider: str | None
    component: str | None
    remote: str

    def __new__(
        cls,
        kind: str,
        *,
        name: str | None = None,
        system: str | None = None,
        provider: str | None = None,
        component: str | None = None,
    ) -> StageFacts:
        """Facts of a stage of ``kind``; an unknown kind or component is a ConfigurationError."""
        info = kind_info(kind)
        if component is not None and component not in n.FAULTS:
            raise ConfigurationError(
                f"component={shown(component)} is not a fault domain; use one of "
                f"{', '.join(n.FAULTS)}"
            )
        self = super().__new__(cls, kind)
        values = {
            "kind": kind,
            "name": kind if name is None else name,
            "system": system,
            "provider": provider,
            "component": component,
            "remote": component or info.remote,
        }
        for key, value in values.items():
            object.__setattr__(self, key, value)
        return self

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"StageFacts are read-only; {key!r} cannot be set")

    def __repr__(self) -> str:
        return (
            f"StageFacts({self.kind!r}, name={self.name!r}, system={self.system!r}, "
            f"provider={self.provider!r}, component={self.component!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_facts, (self.kind, self.name, self.system, self.provider, self.component))


def _facts(
    kind: str, name: str, system: str | None, provider: str | None, component: str | None
) -> StageFacts:
    return StageFacts(kind, name=name, system=system, provider=provider, component=component)


#: A user rule: ``(exception, stage facts) -> Classification | (fault, error_type) | None``.
#: ``StageFacts`` is a ``str`` (the kind), so a rule typed ``(BaseException, str)`` fits too.
Classifier = Callable[[BaseException, StageFacts], "Classification | tuple[str, str] | None"]
#: Called on each link before the table (the configured rules); ``None`` means "not mine".
LinkHook = Callable[[BaseException, StageFacts], "Classification | None"]


def exception_chain(exc: BaseException, limit: int = CHAIN_LIMIT) -> list[BaseException]:
    """``exc`` and what caused it, outermost first: ``__cause__``, else ``__context__`` unless
    suppressed (``raise ... from None``); at most ``limit`` links, none twice (cycles end)."""
    links: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and len(links) < limit and id(current) not in seen:
        seen.add(id(current))
        links.append(current)
        following = current.__cause__
        if following is None and not current.__suppress_context__:
            following = current.__context__
        current = following
    return links


def error_type_name(exc: BaseException) -> str:
    """The exception's qualified class name, without ``builtins.``."""
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _place(hit: _table.Hit, facts: StageFacts) -> Classification:
    if hit.where == _table.REMOTE:
        # component= is the user's word and wins; then the library's own domain; then the kind's.
        return Classification(facts.component or hit.owner or facts.remote, hit.error_type)
    if hit.where == _table.APP:
        return Classification(n.FAULT_APP, hit.error_type)
    return Classification(n.FAULT_MODEL, hit.error_type)  # model, or output in an output kind


def classify_chain(
    exc: BaseException, facts: StageFacts, hook: LinkHook | None = None
) -> Classification:
    """Classify ``exc`` link by link: ``hook`` (the user's rules) first, then the table."""
    enclosing: str | None = None  # the domain of the nearest library wrapping this link
    kind = facts.kind
    for link in exception_chain(exc):
        if hook is not None:
            found = hook(link, facts)
            if found is not None:
                return found
        try:
            hit, owner = _table.lookup(link, kind)
        except Exception:  # an exception whose attributes raise when read: it says nothing
            hit, owner = None, None
        if hit is not None:
            if hit.owner is None and enclosing is not None:
                hit = hit._replace(owner=enclosing)
            return _place(hit, facts)
        enclosing = owner or enclosing
    return Classification(n.FAULT_APP, error_type_name(exc))


def classify(exc: BaseException, stage: StageFacts | str) -> Classification:
    """The built-in classification of ``exc`` raised in ``stage`` (a :class:`StageFacts`, or a
    stage kind such as ``"retrieval"``): the fault domain and the error type.

    Walks the exception chain and names the first link it recognises (see ``docs/faults.md``);
    an unrecognised chain is ``app`` with the raised exception's class name. A classification
    rule calls this to fall back, e.g. on an exception its wrapper keeps in an attribute.
    """
    facts = stage if isinstance(stage, StageFacts) else StageFacts(stage)
    return classify_chain(exc, facts)


def is_cancellation(exc: BaseException) -> bool:
    """True for asyncio cancellation and a generator closed early: outcome ``cancelled``."""
    return isinstance(exc, (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt))
