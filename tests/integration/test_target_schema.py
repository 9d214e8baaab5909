"""Issue 20, points 1 and 2: target tables an application can use, sequences moved at the flip.

After a real cutover the tables crossfade created carry legacy's definition (compared catalog
against catalog, independently of crossfade's own comparison), and an application-style insert
(no key given) into each succeeds with a key above every migrated one and above legacy's own
sequence position.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
import yaml

from crossfade.cutover import gate_model
from tests.conftest import Stack

pytestmark = pytest.mark.integration

LEGACY_DDL = """
CREATE TABLE public.regions (id int PRIMARY KEY, name text);
CREATE TABLE public.customers (
    id int GENERATED ALWAYS AS IDENTITY (START WITH 10 INCREMENT BY 2) PRIMARY KEY,
    email text NOT NULL,
    status text NOT NULL DEFAULT 'new',
    region_id int REFERENCES public.regions (id),
    CONSTRAINT email_has_at CHECK (email LIKE '%@%'),
    UNIQUE (email));
CREATE TABLE public.orders (
    id bigserial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES public.customers (id),
    qty int NOT NULL CHECK (qty > 0),
    placed_at timestamptz NOT NULL DEFAULT now(),
    ref text);
CREATE INDEX orders_by_customer ON public.orders (customer_id, placed_at DESC);
CREATE UNIQUE INDEX orders_ref ON public.orders (lower(ref)) WHERE ref IS NOT NULL;
INSERT INTO public.regions VALUES (1, 'north');
INSERT INTO public.customers (email, region_id) SELECT 'c' || g || '@x', 1 FROM generate_series(1, 60) g;
DELETE FROM public.customers WHERE id > 100;
INSERT INTO public.orders (customer_id, qty, ref)
    SELECT 10 + 2 * (g % 40), 1 + g % 5, CASE WHEN g % 3 = 0 THEN 'R' || g END
    FROM generate_series(1, 300) g;
-- a key given explicitly, far above the sequence (an import, a manual fix)
INSERT INTO public.orders (id, customer_id, qty) VALUES (5000, 10, 1);
"""

TABLES = ["public.customers", "public.orders"]

COLUMNS_SQL = """
SELECT a.attname, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attnotnull,
       format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attname NOT LIKE '\\_cf\\_%%'
"""
CONSTRAINTS_SQL = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = %s::regclass AND contype <> 'n'
"""
INDEXES_SQL = """
SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass
"""


def _catalog(conn: psycopg.Connection, table: str) -> dict[str, Any]:
    return {
        "columns": set(conn.execute(COLUMNS_SQL, (table,)).fetchall()),
        "constraints": set(conn.execute(CONSTRAINTS_SQL, (table,)).fetchall()),
        "indexes": {r[0] for r in conn.execute(INDEXES_SQL, (table,)).fetchall()},
    }


def _cutover(stack: Stack, *args: str) -> tuple[int, dict]:
    r = stack.cli("cutover", "--json", *args, timeout=300)
    assert r.stdout.strip(), f"cutover printed nothing (rc {r.returncode}): {r.stderr[-2000:]}"
    return r.returncode, json.loads(r.stdout)


def test_created_tables_carry_legacy_definition_and_sequences_pass_every_key(
    stack: Stack,
) -> None:
    stack.sql(LEGACY_DDL)
    stack.write_config(TABLES)
    raw = yaml.safe_load(stack.config_path.read_text())
    flag = stack.dir / "frozen"
    raw["cutover"] = {
        "freeze_command": ["touch", str(flag)],
        "unfreeze_command": ["rm", "-f", str(flag)],
        "fence_timeout_s": 120,
        "sequence_gap": 100,
    }
    stack.config_path.write_text(yaml.safe_dump(raw))
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    # changes streamed into the created tables (an ALWAYS identity column written by sync)
    stack.sql("INSERT INTO customers (email) VALUES ('late@x')")
    stack.sql("INSERT INTO orders (customer_id, qty) SELECT max(id), 2 FROM customers")
    # keys drawn and never used (rolled back): legacy's sequence stands above its largest key
    stack.sql("SELECT nextval('public.customers_id_seq') FROM generate_series(1, 5)")
    stack.fence()
    stack.assert_equal()

    # created with the load: defaults, identity, NOT NULL, CHECK, primary key, sequence state
    with stack.src() as src, stack.tgt() as tgt:
        for t in TABLES:
            legacy, new = _catalog(src, t), _catalog(tgt, t)
            assert legacy["columns"] == new["columns"], t
        cons = dict(_catalog(tgt, "public.customers")["constraints"])
        assert cons["email_has_at"] == "CHECK ((email ~~ '%@%'::text))"
        assert "customers_email_key" not in cons  # UNIQUE follows after the load
        assert not any("orders_by_customer" in i for i in _catalog(tgt, "public.orders")["indexes"])

    # until then the gate says what is missing, and the CLI too
    (gate,) = gate_model.evaluate(stack.settings, ["target_schema"])
    assert gate.state == "failed", gate.detail
    assert "missing index CREATE INDEX orders_by_customer" in gate.detail, gate.detail
    assert "customers_region_id_fkey" in gate.detail and "public.regions" in gate.detail
    r = stack.cli("target-schema", "--json")
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    cust = next(t for t in rep["tables"] if t["table"] == "public.customers")
    assert cust["created_by_crossfade"] and cust["to_create"] == ["unique customers_email_key"]
    assert cust["skipped"] == [
        "foreign key customers_region_id_fkey: skipped: it references public.regions, "
        "which crossfade does not migrate"
    ]

    # the real cutover creates the rest after its fence and moves the sequences before the flip
    rc, rep = _cutover(stack)
    assert rc == 0 and rep["go"], [(g["name"], g["state"], g["detail"]) for g in rep["gates"]]
    steps = {g["name"]: g for g in rep["gates"]}
    made = steps["target_schema"]["detail"]
    assert made.startswith("created ") and "public.orders: index orders_by_customer" in made
    assert "public.orders: foreign key orders_customer_id_fkey" in made, made
    assert steps["target_schema"]["state"] == "ok"
    assert "moved 2 of 2 sequence(s)" in steps["sequences"]["detail"], steps["sequences"]

    with stack.src() as src, stack.tgt() as tgt:
        for t in TABLES:
            legacy, new = _catalog(src, t), _catalog(tgt, t)
            # the foreign key to a table crossfade does not migrate is the one difference
            legacy["constraints"] -= {
                c for c in legacy["constraints"] if c[0] == "customers_region_id_fkey"
            }
            assert legacy == new, t
        largest = {t: tgt.execute(f"SELECT max(id) FROM {t}").fetchone()[0] for t in TABLES}
        legacy_seq = src.execute("SELECT last_value FROM public.customers_id_seq").fetchone()[0]
        assert largest["public.orders"] == 5000 and legacy_seq > largest["public.customers"]
        # the application's first inserts: keys above every migrated one, and above legacy's
        cid = tgt.execute(
            "INSERT INTO customers (email) VALUES ('first@new') RETURNING id"
        ).fetchone()[0]
        oid = tgt.execute(
            "INSERT INTO orders (customer_id, qty) VALUES (%s, 1) RETURNING id", (cid,)
        ).fetchone()[0]
        assert cid > max(largest["public.customers"], legacy_seq), (cid, legacy_seq)
        assert oid > largest["public.orders"], oid
        audited = tgt.execute(
            "SELECT detail FROM crossfade.cutover_audit WHERE run_id = %s AND gate = 'sequence' "
            "ORDER BY detail",
            (rep["run_id"],),
        ).fetchall()
        # old and new values: the target's copies stood at legacy's positions at creation
        assert [d[0] for d in audited] == [
            "public.customers_id_seq (public.customers.id): 128 -> 240 "
            "(largest value 130, other side at 140)",
            "public.orders_id_seq (public.orders.id): 300 -> 5100 "
            "(largest value 5000, other side at 301)",
        ]
        # an index dropped behind crossfade's back turns the gate red, naming it
        tgt.execute("DROP INDEX public.orders_by_customer")
    (gate,) = gate_model.evaluate(stack.settings, ["target_schema"])
    assert gate.state == "failed" and "orders_by_customer" in gate.detail, gate.detail
