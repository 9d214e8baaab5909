"""A small legacy CRM for the demo and the tests: schema, seed data and a live writer.

The writer keeps inserting, updating and deleting rows with realistic values (Faker), so the
pipeline is always under way while a demo or a test runs; with a seed it is reproducible.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    kinds: dict[str, int] = field(default_factory=dict)
    """What the transactions did, by kind (``duplicate``, ``regroup``, ``survivor-deleted``...)."""

    @property
    def total(self) -> int:
        return self.inserts + self.updates + self.deletes


class _Bag:
    """Keys with O(1) add, remove and a seeded random pick (the order of adds decides picks)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.pos: dict[Any, int] = {}

    def add(self, k: Any) -> None:
        if k not in self.pos:
            self.pos[k] = len(self.items)
            self.items.append(k)

    def remove(self, k: Any) -> None:
        i = self.pos.pop(k, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.pos[last] = i

    def pick(self, r: random.Random) -> Any:
        return self.items[r.randrange(len(self.items))] if self.items else None

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, k: Any) -> bool:
        return k in self.pos


@dataclass
class _Contact:
    account: int
    first: str
    last: str
    email: str | None
    phone: str | None


class CrmWriter:
    """Writes a mixed load to the legacy CRM until stopped (or ``transactions`` are done).

    ``rate`` is transactions per second (roughly); each transaction holds 1-5 changes. The load
    is what a CRM's users do, and what a migration must survive while it runs: new accounts with
    their contacts and addresses committed in one transaction (parents and children), duplicates
    of existing people arriving (same email written differently, or same phone and a similar
    name), people changing email so they join or leave a duplicate group, survivors of groups
    deleted with their addresses, records broken (an invalid email) and fixed again, accounts
    deactivated (the demo mapping filters them) and reactivated, addresses added and deleted.

    Reproducible: the same ``seed`` on the same starting data makes the same statements in the
    same order (keys, values and timestamps come from the seeded generator and a logical clock,
    never from the database's clock or sampling). The writer knows the rows from its own writes
    (it reads the tables once, when it first writes, so it can continue another writer's data).
    """

    def __init__(
        self,
        dsn: str,
        *,
        seed: int = 7,
        rate: float = 50.0,
        transactions: int | None = None,
        phones: int | None = None,
    ) -> None:
        """``phones``: how many distinct numbers the writer's own phone format draws from. By
        default the 500 fictional ``555-01xx`` numbers of five area codes: at the demo's size a
        shared number is a duplicate's mark, but with tens of thousands of people unrelated ones
        share numbers so often that dedup's blocks join into one component larger than sync
        allows; a benchmark at that size passes a pool that grows with it. With ``phones`` the
        people's e-mail addresses are made distinct too (:meth:`_email`)."""
        self.dsn = dsn
        self.phones = phones
        self.seed_value = seed
        self.rng = random.Random(seed)
        self.fake = Faker()
        self.fake.seed_instance(seed)
        self.rate = rate
        self.limit = transactions
        self.stats = WriterStats()
        self.clock = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()
        """Set when the writer has stopped by itself (``transactions`` done) or was stopped."""
        self._loaded = False
        self.accounts = _Bag()
        self.inactive = _Bag()
        self.contacts: dict[uuid.UUID, _Contact] = {}
        self.contact_bag = _Bag()
        self.broken = _Bag()
        self.addresses: dict[int, uuid.UUID] = {}
        self.address_bag = _Bag()
        self.next_account = 1
        self.next_address = 1
        self.emails_made = 0

    # -- state --------------------------------------------------------------------------------
    def _tick(self) -> dt.datetime:
        self.clock += dt.timedelta(seconds=1)
        return self.clock

    def _load(self, conn: psycopg.Connection) -> None:
        """Learn the rows already there (seeded by another writer, or left by an error)."""
        self.accounts, self.inactive, self.contact_bag, self.broken = _Bag(), _Bag(), _Bag(), _Bag()
        self.address_bag, self.contacts, self.addresses = _Bag(), {}, {}
        for aid, active in conn.execute("SELECT id, active FROM accounts ORDER BY id"):
            (self.accounts if active else self.inactive).add(aid)
            self.next_account = max(self.next_account, aid + 1)
        for cid, acc, first, last, email, phone in conn.execute(
            "SELECT id, account_id, first_name, last_name, email, phone FROM contacts ORDER BY id"
        ):
            self.contacts[cid] = _Contact(acc, first, last, email, phone)
            self.contact_bag.add(cid)
            if email is not None and "@" not in email:
                self.broken.add(cid)
        for aid, cid in conn.execute("SELECT id, contact_id FROM addresses ORDER BY id"):
            self.addresses[aid] = cid
            self.address_bag.add(aid)
            self.next_address = max(self.next_address, aid + 1)
        row = conn.execute(
            "SELECT greatest((SELECT max(created_at) FROM accounts), (SELECT max(updated_at) FROM contacts))"
        ).fetchone()
        if row and row[0] is not None:
            self.clock = max(self.clock, row[0])
        self._loaded = True

    def seed(self, accounts: int = 200) -> None:
        """Insert an initial population (the part the snapshot will carry)."""
        with psycopg.connect(self.dsn, autocommit=False) as conn:
            create_schema(conn)
            self._load(conn)
            self.populate(conn, accounts)
            conn.commit()

    def populate(self, conn: Any, accounts: int) -> None:
        """The seed's inserts: ``accounts`` accounts with their people and addresses, and every
        tenth a duplicate of someone already there. ``conn`` needs only ``execute(sql,
        params)``: bench.mapping_cpu passes one that keeps the rows, without a database."""
        for i in range(accounts):
            self._insert_account(conn)
            if i % 10 == 9 and self.contacts:
                self._insert_duplicate(conn)  # the legacy data has duplicates already

    # -- changes ------------------------------------------------------------------------------
    def _email(self) -> str:
        """Faker's address; at a benchmark's size (``phones`` given) made distinct with a count
        (no random draw: the rest of the data stays the same). Faker's addresses repeat: at 160k
        people a third share theirs with a stranger, dedup's same-email rule joins them, and at
        1M rows the joined groups exceed what sync allows in one component."""
        email = self.fake.email()
        if self.phones is None:
            return email
        self.emails_made += 1
        user, _, domain = email.partition("@")
        return f"{user}.{self.emails_made}@{domain}"

    def _phone(self) -> str:
        r = self.rng
        if r.random() < 0.3:
            return self.fake.phone_number()  # Faker's own formats: some do not parse
        if self.phones is None:
            return f"({r.choice([212, 415, 646, 303, 617])}) 555-{r.randint(100, 199):04d}"
        i, area = divmod(r.randrange(self.phones), 5)
        exchange, line = divmod(i % 8_000_000, 10_000)
        return f"({(212, 415, 646, 303, 617)[area]}) {200 + exchange}-{line:04d}"

    def _insert_account(self, conn: psycopg.Connection) -> None:
        f, r = self.fake, self.rng
        aid = self.next_account
        self.next_account += 1
        now = self._tick()
        active = r.random() >= 0.05  # a few dormant accounts (the demo mapping filters them)
        conn.execute(
            "INSERT INTO accounts (id, name, industry, annual_revenue, employees, tags, metadata, active, "
            "created_at, updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                aid,
                f.company(),
                r.choice(["retail", "finance", "health", "logistics", "media", None]),
                round(r.uniform(1e4, 1e9), 2),
                r.randint(1, 50_000),
                r.sample(["vip", "churn-risk", "partner", "legacy", "eu", "us"], r.randint(0, 3)),
                Jsonb({"source": r.choice(["web", "import", "sales"]), "score": r.randint(0, 100)}),
                active,
                now,
                now.replace(tzinfo=None),
            ),
        )
        (self.accounts if active else self.inactive).add(aid)
        self.stats.inserts += 1
        for _ in range(r.randint(0, 3)):  # its people, with their addresses, in the same commit
            self._insert_contact(
                conn, aid, f.first_name(), f.last_name(), self._email(), self._phone()
            )

    def _insert_contact(
        self,
        conn: psycopg.Connection,
        account: int,
        first: str,
        last: str,
        email: str | None,
        phone: str | None,
    ) -> uuid.UUID:
        f, r = self.fake, self.rng
        cid = uuid.UUID(int=r.getrandbits(128), version=4)
        conn.execute(
            "INSERT INTO contacts (id, account_id, first_name, last_name, email, phone, birth_date, notes, "
            "score, updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                cid,
                account,
                first,
                last,
                email,
                phone,
                f.date_of_birth(minimum_age=18, maximum_age=90),
                f.paragraph() if r.random() < 0.5 else None,
                r.random() * 100,
                self._tick(),
            ),
        )
        self.contacts[cid] = _Contact(account, first, last, email, phone)
        self.contact_bag.add(cid)
        self.stats.inserts += 1
        if r.random() < 0.7:
            self._insert_address(conn, cid)
        return cid

    def _insert_address(self, conn: psycopg.Connection, cid: uuid.UUID) -> None:
        f, r = self.fake, self.rng
        aid = self.next_address
        self.next_address += 1
        conn.execute(
            "INSERT INTO addresses (id, contact_id, kind, street, city, postcode, country) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s)",
            (
                aid,
                cid,
                r.choice(["home", "work"]),
                f.street_address(),
                f.city(),
                f.postcode(),
                f.country_code(),
            ),
        )
        self.addresses[aid] = cid
        self.address_bag.add(aid)
        self.stats.inserts += 1

    def _insert_duplicate(self, conn: psycopg.Connection) -> None:
        """A new record of someone already there: the same email written another way, or the
        same phone and nearly the same name (the demo's match rules)."""
        r = self.rng
        orig = self.contacts[self.contact_bag.pick(r)]
        account = self.accounts.pick(r) or orig.account
        if orig.email and "@" in orig.email and r.random() < 0.6:
            email = orig.email.upper() if r.random() < 0.5 else f"  {orig.email} "
            self._insert_contact(conn, account, orig.first, orig.last, email, self._phone())
        else:
            phone = orig.phone or self._phone()
            last = orig.last.upper() if r.random() < 0.5 else orig.last
            self._insert_contact(conn, account, orig.first, last, self._email(), phone)

    def _update_contact(self, conn: psycopg.Connection, cid: uuid.UUID, **values: Any) -> None:
        sets = ", ".join(f"{k} = %s" for k in values)
        conn.execute(
            f"UPDATE contacts SET {sets}, updated_at = %s WHERE id = %s",
            (*values.values(), self._tick(), cid),
        )
        c = self.contacts[cid]
        for k, v in values.items():
            setattr(
                c,
                {"first_name": "first", "last_name": "last", "account_id": "account"}.get(k, k),
                v,
            )
        self.stats.updates += 1

    def _regroup(self, conn: psycopg.Connection) -> None:
        """Someone changes email: joins another person's group, or leaves theirs."""
        r = self.rng
        cid = self.contact_bag.pick(r)
        other = self.contacts[self.contact_bag.pick(r)]
        if r.random() < 0.5 and other.email and "@" in other.email:
            self._update_contact(conn, cid, email=other.email)
        else:
            self._update_contact(conn, cid, email=self._email(), phone=self._phone())

    def _delete_contact(self, conn: psycopg.Connection, survivor: bool) -> None:
        """A contact goes with its addresses (the application's own cascade); with ``survivor``
        preferably one with duplicates (a golden record's survivor, or a member of it)."""
        r = self.rng
        cid = self.contact_bag.pick(r)
        if survivor:
            for _ in range(20):  # someone whose email another contact shares
                c = self.contacts[cid]
                if c.email and sum(1 for x in self.contacts.values() if x.email == c.email) > 1:
                    break
                cid = self.contact_bag.pick(r)
        gone = [a for a, c in self.addresses.items() if c == cid]
        if gone:
            conn.execute("DELETE FROM addresses WHERE id = ANY(%s)", (gone,))
        conn.execute("DELETE FROM contacts WHERE id = %s", (cid,))
        for a in gone:
            del self.addresses[a]
            self.address_bag.remove(a)
        del self.contacts[cid]
        self.contact_bag.remove(cid)
        self.broken.remove(cid)
        self.stats.deletes += 1 + len(gone)

    def _change(self, conn: psycopg.Connection) -> str:
        """One random change; returns its kind."""
        r, f = self.rng, self.fake
        x = r.random()
        if x < 0.22 or not self.contacts or not self.accounts:
            self._insert_account(conn)
            return "account-with-people"
        if x < 0.32:
            self._insert_duplicate(conn)
            return "duplicate"
        if x < 0.44:
            self._regroup(conn)
            return "regroup"
        if x < 0.52:
            self._update_contact(conn, self.contact_bag.pick(r), phone=self._phone())
            return "contact-update"
        if x < 0.62:
            aid = self.accounts.pick(r)
            conn.execute(
                "UPDATE accounts SET annual_revenue = annual_revenue * %s, updated_at = %s WHERE id = %s",
                (round(r.uniform(0.9, 1.1), 4), self._tick().replace(tzinfo=None), aid),
            )
            self.stats.updates += 1
            return "account-update"
        if x < 0.68 and self.address_bag:
            aid = self.address_bag.pick(r)
            conn.execute("DELETE FROM addresses WHERE id = %s", (aid,))
            del self.addresses[aid]
            self.address_bag.remove(aid)
            self.stats.deletes += 1
            return "address-delete"
        if x < 0.72:
            self._insert_address(conn, self.contact_bag.pick(r))
            return "address-insert"
        if x < 0.78:
            self._delete_contact(conn, survivor=r.random() < 0.6)
            return "survivor-deleted"
        if x < 0.82:
            cid = self.contact_bag.pick(r)
            self._update_contact(conn, cid, email="not-an-email")  # a dead letter, with children
            self.broken.add(cid)
            return "broken"
        if x < 0.86 and self.broken:
            cid = self.broken.pick(r)
            self._update_contact(conn, cid, email=self._email())
            self.broken.remove(cid)
            return "fixed"
        if x < 0.89:
            self._update_contact(conn, self.contact_bag.pick(r), account_id=self.accounts.pick(r))
            return "contact-moves"
        if x < 0.92 and len(self.accounts) > 1:
            aid = self.accounts.pick(r)  # deactivated: filtered, its people lose their parent
            conn.execute(
                "UPDATE accounts SET active = false, updated_at = %s WHERE id = %s",
                (self._tick().replace(tzinfo=None), aid),
            )
            self.accounts.remove(aid)
            self.inactive.add(aid)
            self.stats.updates += 1
            return "account-deactivated"
        if x < 0.95 and self.inactive:
            aid = self.inactive.pick(r)
            conn.execute(  # every change moves updated_at on, as an application does
                "UPDATE accounts SET active = true, updated_at = %s WHERE id = %s",
                (self._tick().replace(tzinfo=None), aid),
            )
            self.inactive.remove(aid)
            self.accounts.add(aid)
            self.stats.updates += 1
            return "account-reactivated"
        self._insert_contact(
            conn, self.accounts.pick(r), f.first_name(), f.last_name(), self._email(), self._phone()
        )
        return "person"

    def step(self, conn: psycopg.Connection) -> None:
        """One transaction of 1-5 random changes."""
        if not self._loaded:
            self._load(conn)
        kinds = []
        try:
            with conn.transaction():
                for _ in range(self.rng.randint(1, 5)):
                    kinds.append(self._change(conn))
        except BaseException:
            self._loaded = False  # what the writer knows was rolled back with it
            raise
        self.stats.transactions += 1
        for k in kinds:
            self.stats.kinds[k] = self.stats.kinds.get(k, 0) + 1

    def _loop(self) -> None:
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            if self.limit is not None and self.stats.transactions >= self.limit:
                break
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
        self.done.set()

    def start(self) -> CrmWriter:
        self.done.clear()
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
