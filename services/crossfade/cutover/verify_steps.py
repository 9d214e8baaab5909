"""The cutover's two verifies (:mod:`crossfade.cutover.gates`, steps ``verify_live`` and
``verify``): in full while writes still flow, then, inside the freeze, only what changed since
(:mod:`crossfade.verify.delta`), so the write downtime follows the recent writes, not the size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossfade.config import Settings
from crossfade.verify.delta import DeltaBase
from crossfade.verify.fence import FenceResult
from crossfade.verify.run import TableReport, Verifier, VerifyReport, delta_base


def mismatch(t: TableReport) -> str:
    """One table's differences, as the cutover names them."""
    return (
        f"{t.name}: {t.missing} missing, {t.extra} extra, {t.different} different"
        + (f", {t.unsettled} unsettled" if t.unsettled else "")
        + (
            f" ({t.unchecked} of them counted, not re-checked: more than the verify keeps "
            "differ, sync is far behind; verify again once it caught up)"
            if t.unchecked
            else ""
        )
        + (f" ({t.error})" if t.error else "")
    )


def verify_live(settings: Settings, options: dict[str, Any]) -> tuple[bool, str, DeltaBase | None]:
    """The full verify while writes flow (recorded in ``verify_runs``, with the live re-check):
    red on a confirmed difference (missing, extra, different, or counted past ``max_keys``);
    unsettled keys are not red: they go, with the run's snapshots, into the returned base of
    the verify inside the freeze (None: no snapshot, PostgreSQL before 13, so that one is full)."""
    v = Verifier(settings, fence_timeout=settings.cutover.fence_timeout_s, **options)
    rep = v.run()
    base = delta_base(v)
    confirmed = [t for t in rep.tables if t.error or t.missing or t.extra or t.different]
    if confirmed:
        return False, "mismatches: " + "; ".join(mismatch(t) for t in confirmed), base
    unsettled = sum(t.unsettled for t in rep.tables)
    rows = sum(t.source_rows for t in rep.tables)
    how = (
        "the verify inside the freeze compares only the rows written since"
        if base is not None
        else "no snapshot (PostgreSQL before 13): the verify inside the freeze is a full one"
    )
    return (
        True,
        (
            f"verify #{rep.run_id}: {len(rep.tables)} table(s), {rows} legacy rows match "
            f"({sum(t.in_flight for t in rep.tables)} in flight"
            + (f", {unsettled} unsettled: compared again inside the freeze" if unsettled else "")
            + f") in {rep.seconds:.1f} s; {how}"
        ),
        base,
    )


def verify_changes(
    settings: Settings,
    base: DeltaBase | None,
    frozen: bool,
    options: dict[str, Any],
    before_fence: Callable[[], object] | None = None,
) -> VerifyReport:
    """Inside the freeze: what changed since ``base`` (a full verify without one), recorded in
    ``verify_runs``. ``frozen``: writes frozen and fenced (the cutover's step before), nothing
    is in flight, so a difference is one, without re-check rounds around more fences; in a dry
    run writes flow and differing keys are re-checked (``live_only_seconds`` of the report).
    ``before_fence``: called before each of those fences (a dry run resumes capture and sync
    there, :mod:`crossfade.cutover.quiet`)."""
    opts: dict[str, Any] = {
        "fence_recheck": not frozen,
        "delta_max_fraction": settings.cutover.verify_delta_max_fraction,
        **options,
    }
    if before_fence is not None:
        inner = opts.get("fence") or (lambda: _fence(settings))

        def fence_after() -> tuple[str, float]:
            before_fence()
            return inner()

        opts["fence"] = fence_after
    return Verifier(
        settings, fence_timeout=settings.cutover.fence_timeout_s, changed_since=base, **opts
    ).run()


def _fence(settings: Settings) -> tuple[str, float]:
    """The verify's own fence (as :class:`~crossfade.verify.run.Verifier` runs it)."""
    r = cutover_fence(settings, "verify")
    return r.token, r.seconds


def cutover_fence(settings: Settings, via: str) -> FenceResult:
    """A fence of the cutover's: polled every :data:`~crossfade.verify.fence.CUTOVER_POLL_S`
    (its time is part of the write downtime and of the dry run's forecast of it)."""
    from crossfade.verify.fence import CUTOVER_POLL_S, fence

    return fence(settings, timeout=settings.cutover.fence_timeout_s, poll=CUTOVER_POLL_S, via=via)


def mapped_note(rep: VerifyReport) -> str:
    """How the verify inside the freeze compared each mapped target: by the keys changed since
    the full verify (how many, of how many rows), or in full and why ("" without mapped tables)."""
    parts = []
    for t in rep.tables:
        how = (t.mapped or {}).get("compared")
        if how is None:
            continue
        if t.delta_keys is not None:
            parts.append(f"{t.name} by {t.delta_keys} changed key(s) of {t.target_rows} rows")
        else:
            parts.append(f"{t.name} {how}")
    return ("; mapped targets: " + ", ".join(parts)) if parts else ""
