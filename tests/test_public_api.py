"""The public face: a small, sorted __all__ that resolves, and docstrings on everything."""

from __future__ import annotations

import inspect

import chainsight


def test_all_is_sorted_and_resolves() -> None:
    assert list(chainsight.__all__) == sorted(chainsight.__all__)
    for name in chainsight.__all__:
        assert hasattr(chainsight, name), name


def test_public_names_have_docstrings() -> None:
    for name in chainsight.__all__:
        obj = getattr(chainsight, name)
        assert inspect.getdoc(obj), f"{name} has no docstring"
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and callable(member):
                    assert inspect.getdoc(member), f"{name}.{attr} has no docstring"


def test_api_doc_mentions_every_public_name() -> None:
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    for name in chainsight.__all__:
        assert f"`{name}" in text or f"{name}(" in text, f"docs/api.md lacks {name}"
