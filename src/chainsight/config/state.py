"""The one current :class:`Config`, built on first use, and the internal-error reporter.

Nothing happens at import: the first stage (or ``configure()``, ``shutdown()``,
``metrics_app()``) builds the configuration of the environment, so an app configured by
``OTEL_*``/``CHAINSIGHT_*`` variables alone is traced too. The process hooks (exit flush,
fork) are installed then, once. Only ``config.configure`` and this module assign ``CONFIG``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import traceback

from chainsight.config import build, lifecycle
from chainsight.config.snapshot import Config

__all__ = ["CONFIG", "current", "install", "report_internal"]

logger = logging.getLogger("chainsight")

CONFIG: Config | None = None
"""The current snapshot; ``None`` until the first use builds it. Read it with :func:`current`."""

# Serialises building and swapping the snapshot; renewed in a forked child.
lock = threading.RLock()
_internal_logged: set[str] = set()
_hooks_installed = False


def current() -> Config:
    """The current configuration, building the environment's on first use."""
    cfg = CONFIG
    if cfg is None:
        cfg = _first()
    return cfg


def _first() -> Config:
    with lock:
        if CONFIG is None:
            install(build.from_environment())
        assert CONFIG is not None  # noqa: S101 - install() just set it
        return CONFIG


def install(cfg: Config | None) -> None:
    """Make ``cfg`` the current configuration (``None``: back to "not built yet")."""
    global CONFIG, _hooks_installed
    CONFIG = cfg
    if cfg is not None and not _hooks_installed:
        _hooks_installed = True
        atexit.register(_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)


def forget_logged() -> None:
    """Let every place log its next internal error again (after ``reset()``)."""
    _internal_logged.clear()


def report_internal(where: str, exc: BaseException) -> None:
    """An error inside chainsight: count it, log it once per place, never raise it.

    With ``CHAINSIGHT_RAISE_INTERNAL_ERRORS=1`` (our own test suite) it is re-raised so bugs show.
    """
    cfg = CONFIG
    try:
        if cfg is not None:
            cfg.metrics.internal_error(where)
        if where not in _internal_logged:
            _internal_logged.add(where)
            logger.error(
                "chainsight internal error in %s (logged once): %s: %s\n%s",
                where,
                type(exc).__qualname__,
                _message(cfg, exc),
                "".join(traceback.format_tb(exc.__traceback__, limit=_TRACEBACK_FRAMES)),
            )
    except Exception:  # noqa: S110 - the reporter itself must never fail the app
        pass
    if cfg is not None and cfg.raise_internal:
        raise exc


# The log line of an internal error: where in the code, and a redacted, bounded message (it may
# quote what the application passed in, like any exception message).
_TRACEBACK_FRAMES = 20
_MESSAGE_BYTES = 512


def _message(cfg: Config | None, exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        return "<unprintable>"
    if cfg is None:
        return "<not shown: no configuration to redact it with>"
    return cfg.redactor(str.__str__(text), _MESSAGE_BYTES) or "<redaction failed>"


def _at_exit() -> None:
    cfg = CONFIG
    if cfg is not None:
        lifecycle.shutdown(cfg, lifecycle.exit_timeout())


def _after_fork_in_child() -> None:
    """Make a forked child (gunicorn/uWSGI workers, multiprocessing) work on its own.

    A lock another thread held at the moment of ``fork()`` stays held forever in the child, so
    ours is renewed; ``lifecycle`` renews what the snapshot's pipeline holds.
    """
    global lock
    lock = threading.RLock()
    cfg = CONFIG
    if cfg is None:
        return
    try:
        lifecycle.after_fork_in_child(cfg)
    except Exception as exc:  # a child must start even if this fails
        report_internal("after_fork", exc)
