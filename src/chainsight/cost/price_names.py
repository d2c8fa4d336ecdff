"""How a model name is matched to a price row: provider synonyms, prefixes, snapshot suffixes.

:meth:`PriceTable.lookup <chainsight.cost.prices.PriceTable.lookup>` tries the names
:func:`_candidates` gives, most specific first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__: list[str] = []

# Other spellings of the OpenTelemetry ``gen_ai.provider.name`` values used in the table, as
# they appear in provider arguments and in prefixes such as LiteLLM's ``gemini/...``.
_PROVIDER_SYNONYMS: Final[Mapping[str, str]] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "claude": "anthropic",
    "gcp.gemini": "gcp.gemini",
    "gcp.gen_ai": "gcp.gemini",
    "gcp.vertex_ai": "gcp.gemini",
    "gemini": "gcp.gemini",
    "google": "gcp.gemini",
    "vertex_ai": "gcp.gemini",
    "mistral_ai": "mistral_ai",
    "mistral": "mistral_ai",
    "mistralai": "mistral_ai",
    "cohere": "cohere",
    "voyage_ai": "voyage_ai",
    "voyage": "voyage_ai",
    "voyageai": "voyage_ai",
}

# Bedrock model ids: optional cross-region prefix, then ``vendor.model``.
_BEDROCK_RE: Final = re.compile(
    r"^(?:(?:us|eu|apac|global|us-gov|jp|au|ca)\.)?(anthropic|cohere|mistral|amazon|meta|ai21)\.(.+)$"
)

# Snapshot and version suffixes, tried from the end of the name, one at a time, until none is
# left. Each removal is a fallback: a row named exactly (e.g. ``mistral-large-2411``, priced
# differently from ``mistral-large``) is found before its suffix is ever removed.
_SUFFIXES: Final = (
    (re.compile(r"@[^@]+$"), "version tag"),  # Vertex AI: claude-sonnet-4-5@20250929
    (re.compile(r"-v\d+(?::\d+)?$"), "version suffix"),  # Bedrock: ...-v2:0
    (re.compile(r"-latest$"), "'-latest' suffix"),
    (re.compile(r"-\d{4}-\d{2}-\d{2}$"), "date suffix"),  # OpenAI: gpt-4o-2024-08-06
    (re.compile(r"-\d{8}$"), "date suffix"),  # Anthropic: claude-3-5-sonnet-20241022
    (re.compile(r"-\d{2}-\d{4}$"), "date suffix"),  # Cohere: command-a-03-2025
    (re.compile(r"-\d{4}$"), "snapshot suffix"),  # Mistral: mistral-small-2506
    (re.compile(r"-\d{3}$"), "snapshot suffix"),  # Gemini: gemini-2.0-flash-001
    (re.compile(r"-preview(?:-\d{2}-\d{2})?$"), "preview suffix"),
)


def _provider(provider: str | None) -> str | None:
    if not provider:
        return None
    key = provider.strip().lower()
    return _PROVIDER_SYNONYMS.get(key, key)


def _candidates(model: str) -> tuple[list[tuple[str, str]], str | None]:
    """The names to try for ``model``, most specific first, and a provider named by a prefix."""
    name = model.strip().lower() if isinstance(model, str) else ""
    if not name:
        return [], None
    out = [(name, "as given")]
    hint: str | None = None
    if "/" in name:
        *prefixes, last = name.split("/")
        for part in reversed(prefixes):
            if part in _PROVIDER_SYNONYMS:
                hint = _PROVIDER_SYNONYMS[part]
                break
        if not last:
            return out, hint
        name = last
        out.append((name, f"prefix '{'/'.join(prefixes)}/' removed"))
    bedrock = _BEDROCK_RE.match(name)
    if bedrock is not None:
        hint = hint or _PROVIDER_SYNONYMS.get(bedrock.group(1))
        name = bedrock.group(2)
        out.append((name, f"Bedrock prefix '{bedrock.group(1)}.' removed"))
    while True:
        for pattern, label in _SUFFIXES:
            shorter = pattern.sub("", name, count=1)
            if shorter != name and shorter:
                out.append((shorter, f"{label} {name[len(shorter) :]!r} removed"))
                name = shorter
                break
        else:
            return out, hint
