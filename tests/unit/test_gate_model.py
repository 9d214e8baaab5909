"""The gate model's judgement of its evidence (what the queries return is given here; the
integration tests in tests/integration/test_gates.py read it from real databases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crossfade.config import Settings
from crossfade.cutover import gate_model
from crossfade.target.store import FenceRun, Heartbeat, mapping_fingerprint

NOW = datetime.now(UTC)


def _settings(**cutover: Any) -> Settings:
    return Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/new"},
        kafka={"bootstrap_servers": "127.0.0.1:1", "topic_prefix": "cf"},
        tables=["public.a"],
        sync={"batch_size": 1000},
        cutover={"alive_fresh_s": 10, "lag_growing_s": 60, "fence_fresh_s": 120, **cutover},
    )


def _ctx(settings: Settings | None = None, **evidence: Any) -> gate_model.Context:
    """A context whose queries are answered by ``evidence`` (keys of Context's cache)."""
    ctx = gate_model.Context(settings or _settings(), object(), object())  # type: ignore[arg-type]
    ctx._cache.update(
        {
            "hb": [],
            "slot": {"name": "crossfade", "exists": True, "active": True},
            "claimed": ["cf.public.a[0]", "cf.public.a[1]"],
            "replays": 0,
            "fences": [],
            "meta": {},
            "rewind": None,
            "control": [],
            **evidence,
        }
    )
    return ctx


def _capture(age: float = 1, quiet: float | None = 1, **detail: Any) -> Heartbeat:
    return Heartbeat("cap", "capture", detail={"last_batch_age_s": quiet, **detail}, age_s=age)


def _sync(
    wid: str = "w1",
    parts: list[str] | None = None,
    age: float = 1,
    lag: int = 0,
    low: int = 0,
    low_age: float = 0,
    **kw: Any,
) -> Heartbeat:
    return Heartbeat(
        wid,
        "sync",
        partitions=["cf.public.a[0]", "cf.public.a[1]"] if parts is None else parts,
        lag=lag,
        lag_low=low,
        detail={"lag_low_age_s": low_age},
        age_s=age,
        **kw,
    )


def _alive(ctx: gate_model.Context) -> gate_model.GateResult:
    (r,) = gate_model.evaluate_in(ctx, ["sync_alive"], publish=False)
    return r


def test_alive_when_every_partition_is_held_by_a_fresh_worker() -> None:
    r = _alive(_ctx(hb=[_capture(), _sync()]))
    assert r.state == "ok" and "1 sync worker(s) hold all 2 partition(s)" in r.detail, r.detail
    assert r.age_s == 1 and r.fresh_s == 10


@pytest.mark.parametrize(
    ("heartbeats", "evidence", "says"),
    [
        ([_capture()], {}, "sync is not running: no sync worker has reported"),
        (
            [_capture(), _sync(age=11)],
            {},
            "sync is not running: no sync worker sent a heartbeat for 11 s",
        ),
        ([_capture(age=12), _sync()], {}, "capture stopped sending heartbeats 12 s ago"),
        ([_capture(quiet=30), _sync()], {}, "Debezium delivered nothing for 31 s"),
        ([_capture(loading=True), _sync()], {}, "still loading the existing rows"),
        (
            [_capture(), _sync()],
            {"slot": {"name": "s", "exists": True, "active": False}},
            "slot s is idle",
        ),
        (
            [_capture(), _sync()],
            {"slot": {"name": "s", "exists": False, "active": False}},
            "slot s does not exist",
        ),
        ([_capture(), _sync(), _sync("w2", parts=[])], {}, "sync worker w2 holds no partition"),
        (
            [_capture(), _sync(parts=["cf.public.a[0]"])],
            {},
            "held by no running sync worker: cf.public.a[1]",
        ),
        (
            [
                _capture(),
                _sync(parts=["cf.public.a[0]"]),
                _sync("dead", ["cf.public.a[1]"], age=40),
            ],
            {},
            "sync worker dead stopped sending heartbeats 40 s ago and nobody took over cf.public.a[1]",
        ),
        (
            [_capture(), _sync(lag=5000, low=100, low_age=70)],
            {},
            "grew from 100 to 5000 records over 71 s",
        ),
        (
            [_capture(), _sync(unassigned_tables=["public.a"])],
            {},
            "no progress while it grows; its log says which): public.a",
        ),
        ([_capture(), _sync()], {"replays": 2}, "replay is still running on 2 partition(s)"),
        ([_capture(), _sync()], {"claimed": []}, "no partition of public.a was ever assigned"),
    ],
)
def test_alive_fails_naming_why(
    heartbeats: list[Heartbeat], evidence: dict[str, Any], says: str
) -> None:
    r = _alive(_ctx(hb=heartbeats, **evidence))
    assert r.state == "failed" and says in r.detail, r.detail


def test_alive_is_not_fooled_by_a_taken_over_worker_nor_by_a_lag_that_drains() -> None:
    # a worker that died and whose partitions another holds; a lag high for a moment
    hbs = [
        _capture(),
        _sync(),
        _sync("old", age=500),
        _sync("w3", parts=["cf.public.a[0]"], lag=5000, low=0, low_age=5),
    ]
    assert _alive(_ctx(hb=hbs)).state == "ok"
    # a lag that has not grown by more than a batch over its low is not growing
    assert _alive(_ctx(hb=[_capture(), _sync(lag=900, low=0, low_age=500)])).state == "ok"


def _fence(ok: bool = True, age: float = 5) -> FenceRun:
    return FenceRun(
        "abcdef0123",
        "cli",
        "me",
        NOW,
        NOW - timedelta(seconds=age),
        ok,
        2,
        0.2,
        None if ok else "timeout",
        age,
    )


@pytest.mark.parametrize(
    ("fences", "heartbeats", "state", "says"),
    [
        ([], [_sync()], "unknown", "no fence recorded yet"),
        ([_fence()], [_sync()], "ok", "fence abcdef01 (cli, 5 s ago) applied on all 2 partitions"),
        ([_fence(age=121)], [_sync()], "stale", "older than 120 s"),
        ([_fence()], [_sync(age=30)], "stale", "sync is not running now"),
        ([_fence(ok=False)], [_sync()], "failed", "failed: timeout"),
    ],
)
def test_fence_gate(
    fences: list[FenceRun], heartbeats: list[Heartbeat], state: str, says: str
) -> None:
    (r,) = gate_model.evaluate_in(
        _ctx(fences=fences, hb=[_capture(), *heartbeats]), ["fence"], publish=False
    )
    assert r.state == state and says in r.detail, r.detail
    if fences:
        assert r.evidence["via"] == "cli" and r.age_s == fences[0].age_s


def _verify(age: float = 60, ok: bool = True, **kw: Any) -> dict[str, Any]:
    v = {
        "id": 7,
        "started_at": NOW - timedelta(seconds=age + 2),
        "finished_at": NOW - timedelta(seconds=age),
        "ok": ok,
        "mismatched": 0 if ok else 1,
        "missing": 0,
        "extra": 0,
        "age_s": age,
        "mapping_hash": mapping_fingerprint(None),
        "tables": ["public.a"],
        "created_by": "me",
    }
    return {**v, **kw}


@pytest.mark.parametrize(
    ("verify", "evidence", "state", "says"),
    [
        (None, {}, "unknown", "no verify of every table recorded yet"),
        (_verify(), {}, "ok", "verify #7 (60 s ago) passed"),
        (
            _verify(delta_of=6),
            {},
            "ok",
            "verify #7 of the rows changed since verify #6 (60 s ago) passed",
        ),
        (_verify(ok=False), {}, "failed", "found 0 missing, 0 extra and 1 differing"),
        (_verify(age=1801), {}, "stale", "older than 1800 s"),
        (_verify(mapping_hash="other"), {}, "stale", "made with another mapping"),
        (_verify(), {"rewind": NOW - timedelta(seconds=10)}, "stale", "older than the last rewind"),
        (
            _verify(),
            {"meta": {"mapping_changed_at": NOW.isoformat()}},
            "stale",
            "older than the mapping sync runs with",
        ),
    ],
)
def test_verify_gate(
    verify: dict[str, Any] | None, evidence: dict[str, Any], state: str, says: str
) -> None:
    (r,) = gate_model.evaluate_in(_ctx(verify=verify, **evidence), ["verify"], publish=False)
    assert r.state == state and says in r.detail, r.detail


def test_stale_and_unknown_are_never_green_in_the_metrics() -> None:
    from prometheus_client import REGISTRY

    from crossfade import metrics

    for state, value in (("ok", 1.0), ("stale", 0.0), ("unknown", 0.0), ("failed", 0.0)):
        metrics.set_gate_state("test_gate", state, 3.0)
        assert (
            REGISTRY.get_sample_value("crossfade_cutover_gate_ok", {"gate": "test_gate"}) == value
        )
    assert (
        REGISTRY.get_sample_value(
            "crossfade_cutover_gate_evidence_age_seconds", {"gate": "test_gate"}
        )
        == 3.0
    )


def test_alive_refuses_go_while_an_operator_paused_a_component() -> None:
    """crossfade pause: the heartbeats may all be fresh, the gate still names the pause."""
    from datetime import UTC, datetime

    from crossfade.target.store import Control

    held = Control("sync", True, "alice", "index rebuild", datetime(2026, 12, 4, 8, 40, tzinfo=UTC))
    r = _alive(_ctx(hb=[_capture(), _sync()], control=[held]))
    assert r.state == "failed"
    assert "sync PAUSED by alice at 2026-12-04 08:40 UTC (index rebuild)" in r.detail
    assert "`crossfade resume sync` first" in r.detail
