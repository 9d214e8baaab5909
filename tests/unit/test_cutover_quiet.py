"""A dry run's quiet pipeline (crossfade.cutover.quiet): capture and sync paused for exactly the
steps measured as the freeze will see them (every step after the fence up to the flip),
resumed after, also on an error or Ctrl-C, and an
operator's own pause left as it was. The control table and the heartbeats are a fake here with
the store's semantics (pause only what nobody paused, resume only one's own pause); the
integration test tests/integration/test_cutover_quiet.py runs it on the embedded stack."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from crossfade.config import Settings
from crossfade.cutover import gates, quiet
from crossfade.cutover.forecast import Spans
from crossfade.target.store import Heartbeat
from tests.unit.test_gate_model import _settings


class FakeStore:
    """``<bookkeeping>.control`` and the heartbeats: each process takes the pause up after
    ``lag`` reads of the heartbeats (its next heartbeat); ``down`` makes the next calls fail."""

    def __init__(self, lag: int = 2, processes: dict[str, int] | None = None) -> None:
        self.control: dict[str, tuple[bool, str | None]] = {}
        self.lag = lag
        self.processes = processes if processes is not None else {"capture": 1, "sync": 2}
        self.reads = 0
        self.paused_at: dict[str, int] = {}
        self.down = 0
        self.log: list[str] = []

    def pause_unpaused(self, _c: Any, _s: str, comps: list[str], by: str, why: str) -> list[str]:
        self._fail()
        done = [c for c in comps if not self.control.get(c, (False, None))[0]]
        for c in done:
            self.control[c] = (True, why)
            self.paused_at[c] = self.reads
        self.log.append(f"pause {done}")
        return done

    def resume_own(self, _c: Any, _s: str, comps: list[str], by: str, why: str) -> list[str]:
        self._fail()
        done = sorted(c for c in comps if self.control.get(c) == (True, why))
        for c in done:
            self.control[c] = (False, None)
        self.log.append(f"resume {done}")
        return done

    def read_heartbeats(self, _c: Any, _s: str) -> list[Heartbeat]:
        self.reads += 1
        out = []
        for role, n in self.processes.items():
            paused, _ = self.control.get(role, (False, None))
            took = paused and self.reads - self.paused_at.get(role, 0) >= self.lag
            out += [Heartbeat(f"{role}-{i}", role, detail={"paused": took}) for i in range(n)]
        return out

    def _fail(self) -> None:
        if self.down:
            self.down -= 1
            raise psycopg.OperationalError("connection refused")


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()

    @contextlib.contextmanager
    def connect(*_a: Any, **_k: Any) -> Iterator[object]:
        yield object()

    monkeypatch.setattr(quiet, "connect", connect)
    for name in ("pause_unpaused", "resume_own", "read_heartbeats"):
        monkeypatch.setattr(quiet, name, getattr(fake, name))
    return fake


def _fast(s: Settings, heartbeat_s: float = 0.05) -> Settings:
    """Heartbeats every ``heartbeat_s``: the wait's bound is 2 x that + 1 s."""
    return s.model_copy(
        update={"sync": s.sync.model_copy(update={"heartbeat_interval_s": heartbeat_s})}
    )


def _quiet(heartbeat_s: float = 0.05) -> quiet.Quiet:
    return quiet.Quiet(_fast(_settings(), heartbeat_s), "run1", "alice")


def test_hold_pauses_both_waits_for_their_heartbeats_and_release_resumes(
    store: FakeStore,
) -> None:
    q = _quiet()
    waited = q.hold()
    rep = q.report
    assert rep is not None and rep.paused == ["capture", "sync"] and rep.kept == []
    assert rep.acknowledged is True and rep.holding == {"capture": "1 of 1", "sync": "2 of 2"}
    assert store.reads >= store.lag and waited == rep.wait_s > 0
    assert all(p for p, _ in store.control.values())
    q.release()
    assert rep.resumed == ["capture", "sync"] and rep.held_s > 0 and rep.error is None
    assert not any(p for p, _ in store.control.values())
    q.release()  # once only
    assert store.log == ["pause ['capture', 'sync']", "resume ['capture', 'sync']"]
    assert "capture and sync paused" in rep.line() and "measured anyway" not in rep.line()


def test_an_operators_pause_is_left_as_it_was(store: FakeStore) -> None:
    store.control["sync"] = (True, "index rebuild")
    q = _quiet()
    q.hold()
    q.release()
    rep = q.report
    assert rep is not None and rep.paused == ["capture"] and rep.kept == ["sync"]
    assert store.control == {"sync": (True, "index rebuild"), "capture": (False, None)}
    assert "sync left paused as an operator set it" in rep.line()


def test_a_pause_someone_set_meanwhile_is_theirs(store: FakeStore) -> None:
    q = _quiet()
    q.hold()
    store.control["sync"] = (True, "someone else, meanwhile")
    q.release()
    assert store.control["sync"] == (True, "someone else, meanwhile")
    assert store.control["capture"] == (False, None)
    assert q.report is not None and q.report.kept == ["sync"]


@pytest.mark.parametrize("exc", [RuntimeError("a step broke"), KeyboardInterrupt()])
def test_resumed_on_an_error_or_ctrl_c(store: FakeStore, exc: BaseException) -> None:
    with pytest.raises(type(exc)), _quiet() as q:
        q.hold()
        raise exc
    assert store.control == {"capture": (False, None), "sync": (False, None)}


def test_no_confirmation_within_the_bound_measures_anyway(store: FakeStore) -> None:
    store.lag = 10**9  # nobody takes the pause up
    q = _quiet(heartbeat_s=0.05)  # bound: 2 x 0.05 + 1 s
    waited = q.hold()
    rep = q.report
    assert rep is not None and rep.acknowledged is False and 1.0 <= waited < 3
    assert "measured anyway" in rep.line() and "capture 0 of 1" in rep.line()
    q.release()
    assert not any(p for p, _ in store.control.values())


def test_a_failed_resume_is_reported_and_tried_again(store: FakeStore) -> None:
    q = _quiet()
    q.hold()
    store.down = 2  # both tries of this release fail
    q.release()
    rep = q.report
    assert rep is not None and rep.resumed == [] and "run `crossfade resume`" in (rep.error or "")
    assert store.control["capture"][0]
    q.release()  # the next call (the cutover's finally) goes through
    assert rep.resumed == ["capture", "sync"] and rep.error is None
    assert not any(p for p, _ in store.control.values())


def test_a_pause_that_cannot_be_set_is_measured_without(store: FakeStore) -> None:
    store.down = 1
    q = _quiet()
    q.hold()
    rep = q.report
    assert rep is not None and rep.paused == [] and "not paused" in rep.line()
    q.release()
    assert store.control == {} and rep.resumed == [] and "not paused" in rep.line()


def test_a_hold_broken_off_after_its_pause_is_still_lifted(
    store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def pause_then_ctrl_c(*a: Any) -> list[str]:
        store.pause_unpaused(*a)  # the pause is set, then Ctrl-C before it is recorded
        raise KeyboardInterrupt

    monkeypatch.setattr(quiet, "pause_unpaused", pause_then_ctrl_c)
    store.control["sync"] = (True, "index rebuild")
    with pytest.raises(KeyboardInterrupt), _quiet() as q:
        q.hold()
    assert store.control == {"capture": (False, None), "sync": (True, "index rebuild")}


def test_spans_leave_out_what_was_skipped() -> None:
    s = Spans(["fence", "row_counts"])
    s.start("fence", 10.0)
    s.skip(2.0)  # waiting for capture and sync to hold, between the fence and the counts
    s.start("row_counts", 13.0)
    s.end("row_counts", 14.0)
    assert s.parts == {"fence": 1.0, "row_counts": 1.0}


class _Audit:
    def __init__(self) -> None:
        self.rows: list[tuple[str, bool, str]] = []

    def write(self, gate: str, ok: bool, detail: str, *_a: Any) -> None:
        self.rows.append((gate, ok, detail))

    def close(self) -> None:
        pass


def _dry_run(
    monkeypatch: pytest.MonkeyPatch, store: FakeStore, verify: Any, **cutover: Any
) -> tuple[gates.Cutover, list[str]]:
    """A dry run whose steps are stand-ins; ``verify`` is the verify step's body (gets the
    run). Returns the run and, per step, whether capture/sync were paused when it ran."""
    c = gates.Cutover(_fast(_settings(**cutover)), dry_run=True)
    c.audit = _Audit()  # type: ignore[assignment]
    seen: list[str] = []

    def step(name: str) -> Any:
        def run() -> tuple[bool, str]:
            seen.append(f"{name} {'paused' if store.control.get('sync', (0,))[0] else 'runs'}")
            if name == "verify":
                verify(c)
            return True, "ok"

        return run

    for name in c.gates:
        if name in ("backup", "reconcile", "smoke"):  # check steps: the checks module runs them
            run = step(name)
            monkeypatch.setattr(gates.checks, f"run_{name}", lambda *_a, run=run: run())
        else:
            monkeypatch.setattr(c, f"gate_{name}", step(name))

    @contextlib.contextmanager
    def connect(*_a: Any, **_k: Any) -> Iterator[object]:
        yield object()

    monkeypatch.setattr(gates, "connect", connect)
    monkeypatch.setattr(gates, "ensure_schema", lambda *_a: None)
    monkeypatch.setattr(gates.gate_model, "evaluate", lambda *_a, **_k: [])
    return c, seen


@pytest.mark.parametrize("optional", [{}, {"reconcile": True, "smoke": True}])
def test_a_dry_run_holds_from_after_the_fence_up_to_the_flip(
    monkeypatch: pytest.MonkeyPatch, store: FakeStore, optional: dict[str, Any]
) -> None:
    """Every step the real run runs frozen after its fence (the schema step and the sequences
    too, and the control totals and smoke checks when configured) runs paused; the flip (the
    freeze ends there) and the steps before the fence (a fence needs capture and sync) run."""
    checks_on = {
        "reconcile": [{"name": "n", "legacy_sql": "SELECT 1", "new_sql": "SELECT 1"}],
        "smoke": [{"name": "s", "sql": "SELECT 1"}],
    }
    c, seen = _dry_run(monkeypatch, store, lambda c: None, **{k: checks_on[k] for k in optional})
    rep = c.run()
    quiet = ["row_counts", *(["reconcile"] if optional else []), "verify", "target_schema"]
    quiet += ["sequences", *(["smoke"] if optional else [])]
    assert seen[seen.index("fence runs") :] == [
        "fence runs",
        *(f"{s} paused" for s in quiet),
        "flip runs",
    ]
    assert all(s.endswith("runs") for s in seen[: seen.index("fence runs")])
    assert rep.go and rep.quiet is not None and rep.quiet["resumed"] == ["capture", "sync"]
    assert store.log == ["pause ['capture', 'sync']", "resume ['capture', 'sync']"]
    assert rep.quiet["holds"] == 1
    row = next(r for r in c.audit.rows if r[0] == "dry_run_quiet")  # type: ignore[attr-defined]
    assert row[1] and "capture and sync paused" in row[2] and "times" not in row[2]
    # the wait for the heartbeats is in no part of the forecast, nor the resume before the
    # flip (the report rounds to the millisecond: compare within it)
    skipped = c.spans.skipped.get("fence", 0)
    assert skipped > 0 and skipped == pytest.approx(rep.quiet["wait_s"], abs=1e-3)
    assert c.spans.skipped.get(quiet[-1], 0) > 0 and "flip" not in c.spans.skipped


def test_the_verifys_first_fence_resumes_first(
    monkeypatch: pytest.MonkeyPatch, store: FakeStore
) -> None:
    from crossfade.cutover import verify_steps

    fenced: list[bool] = []

    def verify(c: gates.Cutover) -> None:
        opts = {"fence": lambda: (fenced.append(store.control["sync"][0]), ("t", 0.1))[1]}
        monkeypatch.setattr(verify_steps, "Verifier", _FakeVerifier)
        verify_steps.verify_changes(c.settings, None, False, opts, c.quiet.release)

    class _FakeVerifier:
        def __init__(self, _s: Any, **kw: Any) -> None:
            self.fence = kw["fence"]

        def run(self) -> None:
            assert store.control["sync"][0]  # the scans: still quiet
            self.fence()
            self.fence()

    c, seen = _dry_run(monkeypatch, store, verify)
    rep = c.run()
    assert fenced == [False, False]  # resumed before the first fence, not paused in the verify
    # paused again for the steps after the verify, resumed before the flip
    assert store.log == ["pause ['capture', 'sync']", "resume ['capture', 'sync']"] * 2
    assert "target_schema paused" in seen and "sequences paused" in seen and "flip runs" in seen
    assert rep.quiet is not None and rep.quiet["holds"] == 2 and rep.quiet["acknowledged"]
    assert rep.quiet["paused"] == rep.quiet["resumed"] == ["capture", "sync"]
    # both waits for the heartbeats are in no part: the first in the fence's, the second in
    # the verify's (the verify's own resume is inside its re-checks, left out of the forecast)
    assert c.spans.skipped["fence"] + c.spans.skipped["verify"] == pytest.approx(
        rep.quiet["wait_s"], abs=2e-3
    )
    row = next(r for r in c.audit.rows if r[0] == "dry_run_quiet")  # type: ignore[attr-defined]
    assert "(2 times)" in row[2]


@pytest.mark.parametrize("exc", [RuntimeError("verify broke"), KeyboardInterrupt()])
def test_a_dry_run_that_breaks_resumes(
    monkeypatch: pytest.MonkeyPatch, store: FakeStore, exc: BaseException
) -> None:
    def verify(_c: gates.Cutover) -> None:
        raise exc

    c, _ = _dry_run(monkeypatch, store, verify)
    if isinstance(exc, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            c.run()
    else:
        assert not c.run().go
    assert store.control == {"capture": (False, None), "sync": (False, None)}


def test_off_by_config_nothing_is_paused(monkeypatch: pytest.MonkeyPatch, store: FakeStore) -> None:
    c, seen = _dry_run(monkeypatch, store, lambda c: None, dry_run_quiet=False)
    rep = c.run()
    assert rep.go and rep.quiet is None and store.log == [] and "verify runs" in seen


@pytest.mark.parametrize(
    ("took", "spreads", "used"),
    [
        ((0.6, 0.1), (0.0, 0.0), "second"),
        ((0.1, 0.6), (0.0, 0.0), "first"),
        # the slower spent most of it between its first and last partition: without the
        # spreads the first is the nearer to a fence with nothing committed after it
        ((0.6, 0.25), (0.55, 0.02), "first"),
    ],
)
def test_a_dry_run_fences_twice_before_its_quiet_and_forecasts_from_the_faster(
    monkeypatch: pytest.MonkeyPatch,
    store: FakeStore,
    took: tuple[float, float],
    spreads: tuple[float, float],
    used: str,
) -> None:
    """The real run's fence runs with the writes stopped: of the dry run's two fences, the
    faster up to its first partition's record is the nearer to it (issue 20). Both run while
    capture and sync run (a fence needs them), before the quiet's pause."""
    from datetime import UTC, datetime

    from crossfade.cutover import gate_model
    from crossfade.verify import fence as fence_mod

    c, seen = _dry_run(monkeypatch, store, lambda c: None)
    times, spread_of = iter(took), iter(spreads)
    fenced: list[str] = []

    def fake_fence(_s: Any, **kw: Any) -> fence_mod.FenceResult:
        fenced.append(f"{kw['via']} {'paused' if store.control.get('sync', (0,))[0] else 'runs'}")
        assert kw["poll"] == fence_mod.CUTOVER_POLL_S < 0.1
        t = next(times)
        time.sleep(t)
        return fence_mod.FenceResult("t", 4, t, spread=next(spread_of))

    monkeypatch.setattr(fence_mod, "fence", fake_fence)
    monkeypatch.delattr(c, "gate_fence")  # the real step, around the fake fence
    ok = gate_model.GateResult("fence", "Lag", "ok", "fence ab12 went through", datetime.now(UTC))
    monkeypatch.setattr(c, "_model", lambda name: ok)
    rep = c.run()
    assert rep.go and fenced == ["cutover runs", "cutover runs"]
    assert "fence runs" not in seen and "row_counts paused" in seen  # the real step ran
    f = rep.fences
    assert f is not None and f["forecast_from"] == used
    # wall-clock times of sleeps: never shorter, longer on a loaded machine (the choice above
    # has a margin of 0.18 s or more)
    assert took[0] <= f["first_s"] < took[0] + 0.4 and took[1] <= f["second_s"] < took[1] + 0.4
    assert (f["first_spread_s"], f["second_spread_s"]) == spreads
    # the part measured holds both fences; the forecast leaves the other one out and the
    # one taken without its spread
    measured, forecast = rep.measured_steps["fence"], rep.downtime_steps["fence"]
    i = 0 if used == "first" else 1
    kept = (f["first_s"], f["second_s"])[i] - spreads[i]
    expect = measured - f["first_s"] - f["second_s"] + kept
    assert measured >= 0.7 and forecast == pytest.approx(expect, abs=2e-3)
    assert forecast < measured - max(f["first_s"], f["second_s"]) + 1e-3
    assert rep.as_dict()["dry_run_fences"] == f
    fence_row = next(r for r in c.audit.rows if r[0] == "fence")  # type: ignore[attr-defined]
    assert "fenced twice, " in fence_row[2], fence_row
    assert f"the forecast takes the {used} without its spread" in fence_row[2], fence_row


def test_a_real_run_fences_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from crossfade.cutover import gate_model
    from crossfade.verify import fence as fence_mod

    c = gates.Cutover(_fast(_settings()), dry_run=False)
    calls: list[str] = []
    monkeypatch.setattr(fence_mod, "fence", lambda _s, **kw: calls.append(kw["via"]))
    ok = gate_model.GateResult("fence", "Lag", "ok", "fence ab12 went through", datetime.now(UTC))
    monkeypatch.setattr(c, "_model", lambda name: ok)
    r = c.gate_fence()
    assert calls == ["cutover"] and c.report.fences is None and "second" not in r.detail
