"""A small legacy CRM for the demo and the tests: schema, seed data and a live writer.

The writer keeps inserting, updating and deleting rows with realistic values (Faker), so the
pipeline is always under way while a demo or a test runs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from faker import Faker
from psycopg.types.json import Jsonb

log = logging.getLogger(__name__)

TABLES = ["public.accounts", "public.contacts", "public.addresses"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS public.accounts (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    industry text,
    annual_revenue numeric(14,2),
    employees integer,
    tags text[],
    metadata jsonb,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamp
);
CREATE TABLE IF NOT EXISTS public.contacts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id bigint,
    first_name text,
    last_name text,
    email text,
    phone text,
    birth_date date,
    notes text,
    score double precision,
    updated_at timestamptz
);
CREATE TABLE IF NOT EXISTS public.addresses (
    id bigserial PRIMARY KEY,
    contact_id uuid,
    kind text,
    street text,
    city text,
    postcode text,
    country char(2)
);
"""


TARGET_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS app;
CREATE TABLE IF NOT EXISTS app.accounts (
    account_id bigint PRIMARY KEY,
    name text NOT NULL,
    industry text NOT NULL,
    annual_revenue numeric(14,2),
    employees integer,
    created_at timestamptz NOT NULL,
    updated_at timestamp
);
CREATE TABLE IF NOT EXISTS app.people (
    person_id uuid PRIMARY KEY,
    account_id bigint,
    first_name text,
    last_name text,
    full_name text,
    email text NOT NULL,
    phone text,
    birth_date date,
    updated_at timestamptz,
    source_system text NOT NULL
);
CREATE TABLE IF NOT EXISTS app.addresses (
    address_id bigint PRIMARY KEY,
    person_id uuid,
    kind text,
    line text,
    country char(2)
);
"""
"""The new system's tables the demo mapping (crm-mapping.yaml in this package) writes."""

MAPPING_FILE = Path(__file__).with_name("crm-mapping.yaml")


def create_target_schema(conn: psycopg.Connection) -> None:
    conn.execute(TARGET_SCHEMA)


def create_schema(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA)


@dataclass
class WriterStats:
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    transactions: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.inserts + self.updates + self.deletes


class CrmWriter:
    """Writes a mixed load to the legacy CRM until stopped.

    ``rate`` is transactions per second (roughly); each transaction holds 1-5 changes.
    """

    def __init__(self, dsn: str, *, seed: int = 7, rate: float = 50.0) -> None:
        self.dsn = dsn
        self.rng = random.Random(seed)
        self.fake = Faker()
        Faker.seed(seed)
        self.rate = rate
        self.stats = WriterStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def seed(self, accounts: int = 200) -> None:
        """Insert an initial population (the part the snapshot will carry)."""
        with psycopg.connect(self.dsn, autocommit=False) as conn:
            create_schema(conn)
            for _ in range(accounts):
                self._insert_account(conn)
            conn.commit()

    def _insert_account(self, conn: psycopg.Connection) -> None:
        f, r = self.fake, self.rng
        acc = conn.execute(
            "INSERT INTO accounts (name, industry, annual_revenue, employees, tags, metadata, active, updated_at) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s, now()::timestamp) RETURNING id",
            (
                f.company(),
                r.choice(["retail", "finance", "health", "logistics", "media", None]),
                round(r.uniform(1e4, 1e9), 2),
                r.randint(1, 50_000),
                r.sample(["vip", "churn-risk", "partner", "legacy", "eu", "us"], r.randint(0, 3)),
                Jsonb({"source": r.choice(["web", "import", "sales"]), "score": r.randint(0, 100)}),
                r.random() >= 0.05,  # a few dormant accounts (the demo mapping filters them)
            ),
        ).fetchone()
        assert acc is not None
        for _ in range(r.randint(0, 3)):
            c = conn.execute(
                "INSERT INTO contacts (account_id, first_name, last_name, email, phone, birth_date, notes, score, updated_at) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s, now()) RETURNING id",
                (
                    acc[0],
                    f.first_name(),
                    f.last_name(),
                    f.email(),
                    f.phone_number(),
                    f.date_of_birth(minimum_age=18, maximum_age=90),
                    f.paragraph() if r.random() < 0.5 else None,
                    r.random() * 100,
                ),
            ).fetchone()
            assert c is not None
            if r.random() < 0.7:
                conn.execute(
                    "INSERT INTO addresses (contact_id, kind, street, city, postcode, country) VALUES (%s,%s,%s,%s,%s,%s)",
                    (
                        c[0],
                        r.choice(["home", "work"]),
                        f.street_address(),
                        f.city(),
                        f.postcode(),
                        f.country_code(),
                    ),
                )
        self.stats.inserts += 1

    def step(self, conn: psycopg.Connection) -> None:
        """One transaction of 1-5 random changes."""
        r, f = self.rng, self.fake
        with conn.transaction():
            for _ in range(r.randint(1, 5)):
                x = r.random()
                if x < 0.35:
                    self._insert_account(conn)
                elif x < 0.6:
                    cur = conn.execute(
                        "UPDATE contacts SET email = %s, phone = %s, updated_at = now() "
                        "WHERE id = (SELECT id FROM contacts TABLESAMPLE SYSTEM (5) LIMIT 1)",
                        (f.email(), f.phone_number()),
                    )
                    self.stats.updates += cur.rowcount
                elif x < 0.8:
                    cur = conn.execute(
                        "UPDATE accounts SET annual_revenue = annual_revenue * %s, updated_at = now()::timestamp "
                        "WHERE id = (SELECT max(id) - %s FROM accounts)",
                        (round(r.uniform(0.9, 1.1), 4), r.randint(0, 50)),
                    )
                    self.stats.updates += cur.rowcount
                elif x < 0.92:
                    cur = conn.execute(
                        "DELETE FROM addresses WHERE id = (SELECT min(id) + %s FROM addresses)",
                        (r.randint(0, 30),),
                    )
                    self.stats.deletes += cur.rowcount
                else:  # a contact goes with its addresses (the application's own cascade)
                    cur = conn.execute(
                        "WITH c AS (SELECT id FROM contacts TABLESAMPLE SYSTEM (5) LIMIT 1), "
                        "a AS (DELETE FROM addresses WHERE contact_id IN (SELECT id FROM c)) "
                        "DELETE FROM contacts WHERE id IN (SELECT id FROM c)"
                    )
                    self.stats.deletes += cur.rowcount
        self.stats.transactions += 1

    def _loop(self) -> None:
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                self.step(conn)
            except psycopg.Error as exc:
                self.stats.errors.append(str(exc).splitlines()[0])
                conn = None
                self._stop.wait(0.5)
            if interval:
                self._stop.wait(interval)
        if conn is not None:
            conn.close()

    def start(self) -> CrmWriter:
        self._thread = threading.Thread(target=self._loop, name="crm-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def wait(seconds: float, stop: threading.Event) -> None:
    end = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < end:
        stop.wait(min(0.5, end - time.monotonic()))
