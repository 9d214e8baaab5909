"""A sync worker whose target refuses a connection after accepting one waits for it (a restart)
instead of stopping as if the DSN were wrong, whether or not it has an identity-mapped table's
applier yet: a mapped-only config never has one, and a second worker (``sync.workers``) met a
target crash in its first batch before it had any (fault 33 under two workers)."""

from __future__ import annotations

from typing import Any

import pytest

from crossfade.config import Settings
from crossfade.errors import DatabaseUnavailable, PreflightError
from crossfade.sync import worker as worker_mod
from crossfade.sync.worker import SyncWorker


def _worker() -> SyncWorker:
    return SyncWorker(
        Settings(
            source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
            target={"dsn": "postgresql://u@127.0.0.1:1/target"},
            kafka={"bootstrap_servers": "127.0.0.1:1"},
            tables=["public.t"],
            sync={"tag_origin": False, "idle_in_transaction_timeout_s": 0},
        )
    )


def _connects(monkeypatch: pytest.MonkeyPatch, *outcomes: Any) -> None:
    it = iter(outcomes)

    def connect(*_a: Any, **_k: Any) -> Any:
        out = next(it)
        if isinstance(out, Exception):
            raise out
        return out

    monkeypatch.setattr(worker_mod, "connect", connect)


def test_a_refused_reconnect_is_waited_for_without_appliers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = _worker()
    conn = object()
    _connects(monkeypatch, conn, PreflightError("cannot connect to the target database"))
    assert w._connect_target() is conn
    assert not w.appliers  # nothing applied yet (or a mapped-only config)
    with pytest.raises(DatabaseUnavailable):
        w._connect_target()


def test_never_connected_a_refusal_stops_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    _connects(monkeypatch, PreflightError("cannot connect to the target database"))
    with pytest.raises(PreflightError) as exc:
        _worker()._connect_target()
    assert not isinstance(exc.value, DatabaseUnavailable)
