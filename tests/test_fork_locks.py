"""Every lock chainsight owns is made anew in a forked child (docs/operations.md, forking).

A lock another thread held at ``fork()`` stays held for ever in the child, so each one that
``src/chainsight`` creates must be created again by an ``after_fork_in_child`` function of its
module (chainsight's one fork hook calls them all), or be listed below with the reason it is
never held across a fork. Read with ``ast``, like ``test_architecture.py``;
``tests/integration/test_fork.py`` holds them all at a real fork.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "chainsight"
SYNC_TYPES = frozenset({"Lock", "RLock", "Condition", "Event", "Semaphore", "BoundedSemaphore"})
# (module, attribute) -> why it needs no renewal.
NOT_KEPT_ACROSS_FORK = {
    ("export/otlp_metrics.py", "done"): (
        "one force_flush() call's own Event; the child drops every waiter (_waiters = [])"
    ),
}


def _is_sync_call(node: ast.expr | None) -> bool:
    """``threading.Lock()`` and friends."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "threading"
        and node.func.attr in SYNC_TYPES
    )


def _target_names(node: ast.Assign | ast.AnnAssign) -> set[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    names = set()
    for target in targets:
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, ast.Attribute):
            names.add(target.attr)
    return names


def _assignments(tree: ast.AST) -> set[str]:
    """Names and attributes a ``threading.*`` synchronisation object is assigned to."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and _is_sync_call(node.value):
            found |= _target_names(node)
    return found


def _renewed(tree: ast.AST) -> set[str]:
    """What the module's ``after_fork_in_child`` functions (any spelling) create again."""
    renewed: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name.endswith("after_fork_in_child"):
            renewed |= _assignments(node)
    return renewed


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _assignments(ast.parse(p.read_text())))


def test_the_audit_finds_the_locks() -> None:
    # The scan must see the locks it is about, or the test below would pass on nothing.
    names = {p.relative_to(PACKAGE).as_posix() for p in MODULES}
    assert {"config/state.py", "export/jsonl.py", "export/traces.py", "cost/budget.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_each_lock_is_renewed_in_a_forked_child(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = path.relative_to(PACKAGE).as_posix()
    exempt = {attr for (where, attr) in NOT_KEPT_ACROSS_FORK if where == module}
    missing = _assignments(tree) - _renewed(tree) - exempt
    assert not missing, (
        f"{module}: {sorted(missing)} not created again by an after_fork_in_child function; "
        "renew it there (and call that from config.lifecycle.after_fork_in_child), or list it "
        "in NOT_KEPT_ACROSS_FORK with the reason it is never held across fork()"
    )
