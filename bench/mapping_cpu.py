"""The mapping's CPU per row, in one process, without Kafka or PostgreSQL.

    .venv/bin/python -m bench.mapping_cpu [--accounts 3000] [--repeat 5] [--profile]

Generates the demo CRM's rows with the seeded writer bench.mapped_load uses
(:meth:`CrmWriter.populate`: accounts, contacts, addresses, duplicates, Faker phone formats that
do not parse; ``--broken`` of the contacts get the writer's invalid email), in the normal form
psycopg would read them in, and maps every row with the demo mapping (crm-mapping.yaml: email
validated and normalised, phone to E.164, names re-cased, lookups, a filter, rules) through
:meth:`Mapper.map_row`. Prints µs of CPU per row, best of ``--repeat`` passes, and as the
baseline of the same run the same rows through the identity mapping of the same tables (what
mapping costs when it does nothing). ``--profile``: cProfile of one mapped pass, top functions.
Writes ``bench/results/mapping_cpu.json`` and a history row (``--no-save``: print only).
"""

from __future__ import annotations

import argparse
import cProfile
import decimal
import pstats
import random
import re
from collections import Counter
from typing import Any

import yaml

from bench import history
from bench.sync_cpu import best_us
from bench.sync_worker_cpu import service_gc
from crossfade.config.mapping import MappingConfig
from crossfade.embedded.crm import MAPPING_FILE, TABLES, CrmWriter
from crossfade.mapping import Mapper, compile_mapping

try:
    from crossfade.mapping.transforms import clear_caches
except ImportError:  # a commit before the per-value caches (to compare with): only country's

    def clear_caches() -> None:
        from crossfade.mapping.transforms import contact

        getattr(contact, "_country_lookup").cache_clear()  # noqa: B009


SOURCE_KEYS = {t: ["id"] for t in TABLES}
INSERT = re.compile(r"INSERT INTO (\w+) \(([^)]*)\)")


class RowRecorder:
    """Stands in for the writer's connection: keeps each INSERT (table, columns, parameters as
    the writer passed them: bench.mapped_load writes them with COPY) and gives the rows in the
    normal form (the Python values psycopg returns for the CRM's column types)."""

    def __init__(self) -> None:
        self.inserts: list[tuple[str, list[str], tuple[Any, ...]]] = []

    def execute(self, sql: str, params: Any = None) -> None:
        m = INSERT.match(sql)
        if m is None:
            return  # the seed only inserts
        self.inserts.append((m.group(1), [c.strip() for c in m.group(2).split(",")], params))

    @property
    def rows(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for table, cols, params in self.inserts:
            row = dict(zip(cols, params, strict=True))
            if "metadata" in row:
                row["metadata"] = row["metadata"].obj  # Jsonb -> dict, as psycopg loads jsonb
            if row.get("annual_revenue") is not None:  # numeric(14,2)
                row["annual_revenue"] = decimal.Decimal(f"{row['annual_revenue']:.2f}")
            out.append((f"public.{table}", row))
        return out


def crm_rows(accounts: int, broken: float = 0.0, seed: int = 7) -> list[tuple[str, dict[str, Any]]]:
    """(source table, row) of the demo CRM's seed; ``broken``: the share of contacts whose
    email is the writer's invalid one."""
    writer = CrmWriter("", seed=seed, phones=int(10 * 3.7 * accounts))
    rec = RowRecorder()
    writer.populate(rec, accounts)
    rows = rec.rows
    r = random.Random(seed)
    for table, row in rows:
        if table == "public.contacts" and r.random() < broken:
            row["email"] = "not-an-email"
    return rows


def demo_mapper() -> Mapper:
    return compile_mapping(
        MappingConfig.model_validate(yaml.safe_load(MAPPING_FILE.read_text())),
        TABLES,
        SOURCE_KEYS,
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--accounts", type=int, default=3000, help="accounts seeded (~3.7 rows each)")
    ap.add_argument("--broken", type=float, default=0.02, help="share of contacts, invalid email")
    ap.add_argument("--seed", type=int, default=7, help="the CRM generator's seed")
    ap.add_argument("--repeat", type=int, default=5, help="passes timed (the best counts)")
    ap.add_argument("--profile", action="store_true", help="cProfile one mapped pass")
    ap.add_argument(
        "--no-save", action="store_true", help="print only (no result file, no history row)"
    )
    args = ap.parse_args()
    rows = crm_rows(args.accounts, args.broken, args.seed)
    mapped = demo_mapper()
    identity = compile_mapping(MappingConfig(), TABLES, SOURCE_KEYS)

    def run(m: Mapper) -> Counter[str]:
        return Counter(m.map_row(t, r).outcome for t, r in rows)

    service_gc()  # as the services do (crossfade.ops.cli)
    outcomes = run(mapped)
    print(f"{len(rows)} rows ({dict(Counter(t for t, _ in rows))}); outcomes {dict(outcomes)}")
    if args.profile:
        clear_caches()
        prof = cProfile.Profile()
        prof.runcall(run, mapped)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    # every value new to the transforms' caches (a snapshot: each row mapped once) ...
    mapped_us = best_us(lambda: run(mapped), args.repeat, len(rows), clear_caches)
    # ... and the same rows mapped again (updates that leave email and phone as they were,
    # children mapped once more when their parent was missing, verify)
    again_us = best_us(lambda: run(mapped), args.repeat, len(rows))
    identity_us = best_us(lambda: run(identity), args.repeat, len(rows))
    print(f"demo mapping (crm-mapping.yaml), Mapper.map_row: {mapped_us:6.1f} us CPU/row")
    print(f"  the same rows mapped again (warm caches):        {again_us:6.1f} us CPU/row")
    print(f"identity mapping of the same tables, the baseline: {identity_us:6.1f} us CPU/row")
    history.record(
        "mapping_cpu",
        args,
        {
            "rows": len(rows),
            "outcomes": dict(outcomes),
            "mapped_us_per_row": mapped_us,
            "mapped_again_us_per_row": again_us,
            "identity_us_per_row": identity_us,
        },
        "demo CRM rows, CPU us/row best: demo mapping / identity",
        f"{mapped_us:.1f}",
        f"{identity_us:.1f}",
        not args.no_save,
    )


if __name__ == "__main__":
    main()
