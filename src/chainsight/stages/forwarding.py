"""A decorated function's outer layer, made at decoration with the function's own parameters.

Turned off (``configure(enabled=False)``), a stage is only this layer: read the snapshot, see
it is off, call the function. A generic ``def wrapper(*args, **kwargs)`` spends most of that
time packing and unpacking the arguments (~60 ns where the layer's own work is ~20 ns), so
:func:`forwarding` writes a function with the decorated function's exact parameter list once,
at decoration, and forwards them as they came. On, it hands the same arguments to the traced
wrapper. Signatures it cannot copy exactly (none found, odd names) keep the generic wrapper.
Sync functions only: for a coroutine, such a layer would be one more frame on every resumption.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Final

from chainsight.config import state as _state

__all__ = ["forwarding"]

_POSITIONAL: Final = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_TEMPLATE: Final = """
def make(_cs_state, _cs_func, _cs_traced{defaults}):
    def {name}({params}):
        _cs_cfg = _cs_state.CONFIG
        if _cs_cfg is not None and not _cs_cfg.enabled:
            return _cs_func({call})
        return _cs_traced({call})
    return {name}
"""


def _parameters(func: Callable[..., Any]) -> tuple[str, str, list[object]] | None:
    """(parameter list, call arguments, defaults) copying ``func``'s signature, or None."""
    try:
        signature = inspect.signature(func, follow_wrapped=False)
    except (TypeError, ValueError):
        return None
    params: list[str] = []
    call: list[str] = []
    defaults: list[object] = []
    starred = False
    positional_only = False
    for param in signature.parameters.values():
        name = param.name
        if not name.isidentifier() or name.startswith("_cs_"):
            return None
        default = ""
        if param.default is not inspect.Parameter.empty:
            default = f"=_cs_d{len(defaults)}"
            defaults.append(param.default)
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            positional_only = True
        elif positional_only:  # the first parameter after the positional-only ones
            params.append("/")
            positional_only = False
        if param.kind in _POSITIONAL:
            params.append(name + default)
            call.append(name)
        elif param.kind is inspect.Parameter.VAR_POSITIONAL:
            starred = True
            params.append("*" + name)
            call.append("*" + name)
        elif param.kind is inspect.Parameter.KEYWORD_ONLY:
            if not starred:
                starred = True
                params.append("*")
            params.append(name + default)
            call.append(f"{name}={name}")
        else:
            params.append("**" + name)
            call.append("**" + name)
    if positional_only:
        params.append("/")
    return ", ".join(params), ", ".join(call), defaults


def forwarding(func: Callable[..., Any], traced: Callable[..., Any]) -> Callable[..., Any]:
    """A function with ``func``'s parameters that calls ``func`` when chainsight is off and
    ``traced`` (the generic traced wrapper) when it is on; ``traced`` itself if the signature
    cannot be copied. Metadata (name, docstring, ``__wrapped__``) is the caller's to copy."""
    found = _parameters(func)
    if found is None:
        return traced
    params, call, defaults = found
    source = _TEMPLATE.format(
        name="wrapper",
        params=params,
        call=call,
        defaults="".join(f", _cs_d{i}" for i in range(len(defaults))),
    )
    namespace: dict[str, Any] = {}
    try:
        # Our own template, filled with parameter names that are checked identifiers.
        code = compile(source, f"<chainsight stage {getattr(func, '__qualname__', '?')}>", "exec")
        exec(code, namespace)  # noqa: S102
        made: Callable[..., Any] = namespace["make"](_state, func, traced, *defaults)
    except Exception:  # a signature this template cannot express: the generic wrapper serves
        return traced
    return made
