"""What capture needs from the legacy database, checked before anything is written, and the SQL a
DBA runs to give it (``crossfade prepare-source``).

Capture runs Debezium's PostgreSQL connector with ``pgoutput`` and
``publication.autocreate.mode=filtered`` (:mod:`crossfade.capture.connector`). Read from its code
(Debezium 3.6 ``PostgresReplicationConnection``), that needs:

* the REPLICATION attribute (or superuser, or membership of ``rds_replication`` on RDS) to create
  and stream the replication slot;
* the publication: when it does not exist Debezium runs ``CREATE PUBLICATION <name> FOR TABLE
  <captured tables>``, which needs CREATE on the database and ownership of every table; when it
  exists with exactly the captured tables Debezium uses it as it is (no privilege needed); with
  other tables it runs ``ALTER PUBLICATION ... SET TABLE`` (ownership of the publication and the
  tables); a ``FOR ALL TABLES`` publication is refused by the filtered mode;
* SELECT on every captured table (the snapshot), USAGE on their schemas;
* the fence and signal tables (:data:`FENCE_DDL`, :data:`SIGNAL_DDL` in
  :mod:`crossfade.capture.preflight`): created by capture when missing (CREATE on the database or
  the ``crossfade`` schema), written by ``fence`` and ``verify --repair`` (INSERT, and the fence's
  sequence);
* a free replication slot (``max_replication_slots``) when the slot does not exist yet.

:func:`missing` names every missing one with the one statement that fixes it; :func:`prepare_sql`
is the whole least-privilege setup; :func:`wal_headroom` estimates how long capture can stop before
the slot's retained WAL fills the disk.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import psycopg.sql

from crossfade.capture.connector import FENCE_TABLE, SIGNAL_TABLE, captured_tables
from crossfade.config import Settings

FENCE_DDL = """
CREATE SCHEMA IF NOT EXISTS crossfade;
CREATE TABLE IF NOT EXISTS crossfade.fence (
    id bigserial PRIMARY KEY,
    token text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

SIGNAL_DDL = """
CREATE SCHEMA IF NOT EXISTS crossfade;
CREATE TABLE IF NOT EXISTS crossfade.debezium_signal (
    id varchar(64) PRIMARY KEY,
    type varchar(32) NOT NULL,
    data text
);
"""
"""Debezium's signal table (its documented shape; ``data`` as text: a repair's key filter can be long)."""

OWN_TABLE_PRIVILEGES = {
    FENCE_TABLE: ("SELECT", "INSERT", "UPDATE"),  # fence writes its row, then touches it again
    SIGNAL_TABLE: ("SELECT", "INSERT"),  # verify --repair's signals, Debezium's watermarks
}


@dataclass(frozen=True)
class Missing:
    """One thing capture needs that the source lacks, and the statement that gives it."""

    short: str
    """A few words for the summary line (``REPLICATION``, ``SELECT on public.customers``)."""
    what: str
    fix: str
    """The SQL that gives it (one line)."""

    def line(self) -> str:
        return f"{self.what}; fix: {self.fix}"


def ident(name: str) -> str:
    """A name quoted as PostgreSQL would need it (``public.customers`` -> ``"public"."customers"``
    only where needed: plain lower-case names stay as they are, so the SQL reads as a DBA writes it)."""
    out = []
    for part in name.split("."):
        plain = part.isidentifier() and part == part.lower() and part.isascii()
        out.append(part if plain else '"' + part.replace('"', '""') + '"')
    return ".".join(out)


def _table_list(tables: list[str]) -> str:
    return ", ".join(ident(t) for t in tables)


def publication_sql(name: str, tables: list[str]) -> str:
    """Create the publication with exactly ``tables``, or set its tables to them (one statement)."""
    lit = name.replace("'", "''")
    return (
        f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '{lit}') "
        f"THEN ALTER PUBLICATION {ident(name)} SET TABLE {_table_list(tables)}; "
        f"ELSE CREATE PUBLICATION {ident(name)} FOR TABLE {_table_list(tables)}; END IF; END $$;"
    )


def _autocreate_mode(settings: Settings) -> str:
    from crossfade.capture.connector import connector_properties

    return connector_properties(settings).get("publication.autocreate.mode", "filtered")


def _database(conn: psycopg.Connection) -> tuple[str, str]:
    row = conn.execute("SELECT current_database(), current_user").fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def _replication(conn: psycopg.Connection, user: str) -> list[Missing]:
    row = conn.execute(
        "SELECT r.rolsuper OR r.rolreplication OR (EXISTS (SELECT 1 FROM pg_roles "
        "WHERE rolname = 'rds_replication') AND pg_has_role(current_user, 'rds_replication', "
        "'MEMBER')), EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication') "
        "FROM pg_roles r WHERE r.rolname = current_user"
    ).fetchone()
    if row and row[0]:
        return []
    fix = (
        f"GRANT rds_replication TO {ident(user)};"
        if row and row[1]
        else f"ALTER ROLE {ident(user)} WITH REPLICATION;"
    )
    return [
        Missing(
            "REPLICATION",
            f"role {user} has no REPLICATION privilege (Debezium streams a slot)",
            fix,
        )
    ]


def _tables(conn: psycopg.Connection, user: str, tables: list[str]) -> tuple[list[Missing], dict]:
    """SELECT and schema USAGE on each existing table; returns the problems and, per existing
    table, (owned by the user, owner's name)."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname, pg_has_role(current_user, c.relowner, 'USAGE'), "
        "pg_get_userbyid(c.relowner), has_table_privilege(c.oid, 'SELECT'), "
        "has_schema_privilege(n.oid, 'USAGE'), n.nspname "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname || '.' || c.relname = ANY(%s) AND c.relkind IN ('r', 'p')",
        (tables,),
    ).fetchall()
    out: list[Missing] = []
    schemas_seen: set[str] = set()
    info = {}
    for table, owned, owner, select, usage, schema in rows:
        info[table] = (bool(owned), str(owner))
        if not usage and schema not in schemas_seen:
            schemas_seen.add(schema)
            out.append(
                Missing(
                    f"USAGE on schema {schema}",
                    f"role {user} has no USAGE on schema {schema}",
                    f"GRANT USAGE ON SCHEMA {ident(schema)} TO {ident(user)};",
                )
            )
        if not select:
            out.append(
                Missing(
                    f"SELECT on {table}",
                    f"role {user} may not SELECT from {table} (the snapshot reads it)",
                    f"GRANT SELECT ON {ident(table)} TO {ident(user)};",
                )
            )
    return out, info


def _own_tables(settings: Settings, conn: psycopg.Connection, user: str) -> list[Missing]:
    """The fence and signal tables: writable when they exist, creatable when they do not."""
    wanted = [
        (FENCE_TABLE, settings.capture.fence_table, "capture.fence_table"),
        (SIGNAL_TABLE, settings.capture.signal_table, "capture.signal_table"),
    ]
    out: list[Missing] = []
    for table, enabled, setting in wanted:
        if not enabled:
            continue
        schema = table.split(".", 1)[0]
        row = conn.execute(
            "SELECT bool_and(has_table_privilege(c.oid, p)), "
            "has_schema_privilege(c.relnamespace, 'USAGE') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, unnest(%s::text[]) p "
            "WHERE n.nspname || '.' || c.relname = %s GROUP BY c.relnamespace",
            (list(OWN_TABLE_PRIVILEGES[table]), table),
        ).fetchone()
        if row is not None:
            if not row[1]:
                out.append(
                    Missing(
                        f"USAGE on schema {schema}",
                        f"role {user} has no USAGE on schema {schema} ({table} is in it)",
                        f"GRANT USAGE ON SCHEMA {ident(schema)} TO {ident(user)};",
                    )
                )
            if not row[0]:
                out.append(
                    Missing(
                        f"{', '.join(OWN_TABLE_PRIVILEGES[table])} on {table}",
                        f"role {user} may not write {table} ({setting})",
                        f"GRANT {', '.join(OWN_TABLE_PRIVILEGES[table])} ON {ident(table)} TO "
                        f"{ident(user)};",
                    )
                )
            if table == FENCE_TABLE:
                # by the catalog, not by name: resolving a name needs USAGE on its schema
                seq = conn.execute(
                    "SELECT has_sequence_privilege(s.oid, 'USAGE') FROM pg_class s "
                    "JOIN pg_namespace n ON n.oid = s.relnamespace "
                    "WHERE n.nspname = %s AND s.relname = 'fence_id_seq'",
                    (schema,),
                ).fetchone()
                if seq is not None and seq[0] is False:
                    out.append(
                        Missing(
                            "USAGE on crossfade.fence_id_seq",
                            f"role {user} may not use the sequence of {table}",
                            f"GRANT USAGE ON SEQUENCE {ident(schema)}.fence_id_seq TO {ident(user)};",
                        )
                    )
            continue
        can = conn.execute(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s) THEN "
            "has_schema_privilege(%s, 'CREATE') "
            "ELSE has_database_privilege(current_database(), 'CREATE') END",
            (schema, schema),
        ).fetchone()
        if not (can and can[0]):
            out.append(
                Missing(
                    f"{table} (cannot create it)",
                    f"{table} does not exist and role {user} may not create it ({setting})",
                    " ".join(own_table_sql(table, user)),
                )
            )
    return out


def _publication(
    settings: Settings, conn: psycopg.Connection, user: str, info: dict
) -> list[Missing]:
    """What Debezium's publication handling needs (see the module docstring)."""
    name = settings.capture.publication_name
    tables = captured_tables(settings)
    mode = _autocreate_mode(settings)
    pub = conn.execute(
        "SELECT p.puballtables, pg_has_role(current_user, p.pubowner, 'USAGE'), "
        "ARRAY(SELECT schemaname || '.' || tablename FROM pg_publication_tables t "
        "WHERE t.pubname = p.pubname) FROM pg_publication p WHERE p.pubname = %s",
        (name,),
    ).fetchone()
    fix = publication_sql(name, tables)
    if pub is not None and mode == "all_tables":
        return []
    if pub is None and mode == "disabled":
        return [
            Missing(
                f"publication {name}",
                f"publication {name} does not exist (autocreate is disabled)",
                fix,
            )
        ]
    if pub is not None and pub[0]:
        return [
            Missing(
                f"publication {name} FOR TABLE, not FOR ALL TABLES",
                f"publication {name} is FOR ALL TABLES, which Debezium's filtered mode refuses",
                f"DROP PUBLICATION {ident(name)}; {fix}",
            )
        ]
    if pub is not None and set(pub[2]) == set(tables):
        return []  # used as it is: no privilege needed
    # Debezium creates it, or sets its tables: ownership of every table (and of the publication)
    if pub is None and mode == "all_tables":
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        su = row.fetchone()
        if su and su[0]:
            return []
        return [
            Missing(
                f"publication {name}", f"publication {name} FOR ALL TABLES needs a superuser", fix
            )
        ]
    out = _publication_create(conn, name, user, fix) if pub is None else []
    if pub is not None and not pub[1]:
        out.append(
            Missing(
                f"ownership of publication {name}",
                f"publication {name} holds other tables than capture's and role {user} does "
                "not own it (Debezium would ALTER it)",
                fix,
            )
        )
    verb = "create" if pub is None else "alter"
    for t in [t for t in tables if t in info and not info[t][0]]:
        out.append(
            Missing(
                f"ownership of {t} (or publication {name})",
                f"role {user} does not own {t} (owner: {info[t][1]}), which Debezium needs to "
                f"{verb} publication {name}",
                f"run as {info[t][1]} or a superuser: {fix}",
            )
        )
    return out


def _publication_create(conn: psycopg.Connection, name: str, user: str, fix: str) -> list[Missing]:
    """CREATE on the database, which creating the publication needs."""
    c = conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()
    if c and c[0]:
        return []
    db, _ = _database(conn)
    return [
        Missing(
            f"CREATE on database {db}",
            f"publication {name} does not exist and role {user} has no CREATE on "
            f"database {db} to create it",
            f"{fix} (as the tables' owner), or GRANT CREATE ON DATABASE {ident(db)} TO "
            f"{ident(user)};",
        )
    ]


def _slots(settings: Settings, conn: psycopg.Connection) -> list[Missing]:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s), "
        "(SELECT count(*) FROM pg_replication_slots), current_setting('max_replication_slots')::int",
        (settings.capture.slot_name,),
    ).fetchone()
    if row is None or row[0] or row[1] < row[2]:
        return []
    return [
        Missing(
            "a free replication slot",
            f"all {row[2]} replication slots are in use and slot {settings.capture.slot_name} "
            "does not exist yet",
            f"ALTER SYSTEM SET max_replication_slots = {row[2] + 2}; (then restart PostgreSQL), or "
            "drop an unused slot with pg_drop_replication_slot",
        )
    ]


def missing(conn: psycopg.Connection, settings: Settings) -> list[Missing]:
    """Every privilege and object capture needs that the connected role lacks (empty: none).

    Reads catalogs only; the tables that do not exist are the caller's to report."""
    _, user = _database(conn)
    out = _replication(conn, user)
    user_tables = [t for t in captured_tables(settings) if t not in (FENCE_TABLE, SIGNAL_TABLE)]
    problems, info = _tables(conn, user, user_tables)
    out += problems
    out += _own_tables(settings, conn, user)
    # the fence/signal tables: the role owns them when capture creates them
    _, own_info = _tables(conn, user, [FENCE_TABLE, SIGNAL_TABLE])
    for t in (FENCE_TABLE, SIGNAL_TABLE):
        info[t] = own_info.get(t, (True, user))
    out += _publication(settings, conn, user, info)
    out += _slots(settings, conn)
    return out


def own_table_sql(table: str, role: str) -> list[str]:
    """Create the fence or signal table (a DBA's way: the role needs no CREATE) and let ``role``
    write it."""

    ddl = FENCE_DDL if table == FENCE_TABLE else SIGNAL_DDL
    schema = table.split(".", 1)[0]
    out = [" ".join(s.split()) + ";" for s in ddl.split(";") if s.strip()]
    out += [
        f"GRANT USAGE ON SCHEMA {ident(schema)} TO {ident(role)};",
        f"GRANT {', '.join(OWN_TABLE_PRIVILEGES[table])} ON {ident(table)} TO {ident(role)};",
    ]
    if table == FENCE_TABLE:
        out.append(f"GRANT USAGE ON SEQUENCE {ident(schema)}.fence_id_seq TO {ident(role)};")
    return out


# -- the DBA's script --------------------------------------------------------------------------
def prepare_sql(settings: Settings, role: str, database: str) -> list[str]:
    """The statements a DBA runs (as a superuser, or the tables' owner with CREATEROLE) so that
    ``role`` can run capture with the least privilege: LOGIN REPLICATION, USAGE and SELECT, the
    fence and signal tables it may write, REPLICA IDENTITY where a table has no primary key, and
    the publication with exactly the captured tables. Idempotent; no password in it."""
    r = ident(role)
    lit = role.replace("'", "''")
    user_tables = list(settings.tables)
    schemas = sorted({t.split(".", 1)[0] for t in user_tables})
    out = [
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{lit}') "
        f"THEN CREATE ROLE {r} WITH LOGIN REPLICATION; END IF; END $$;",
        f"ALTER ROLE {r} WITH LOGIN REPLICATION;",
        f"GRANT CONNECT ON DATABASE {ident(database)} TO {r};",
        *(f"GRANT USAGE ON SCHEMA {ident(s)} TO {r};" for s in schemas),
        f"GRANT SELECT ON {_table_list(user_tables)} TO {r};",
    ]
    for table, enabled in (
        (FENCE_TABLE, settings.capture.fence_table),
        (SIGNAL_TABLE, settings.capture.signal_table),
    ):
        if enabled:
            out += own_table_sql(table, role)
    # a table without a primary key in a publication that publishes UPDATE and DELETE would make
    # the application's own UPDATEs fail: FULL identity keeps them working
    out += [
        f"ALTER TABLE {ident(t)} REPLICA IDENTITY FULL;" for t in settings.sync.append_only_tables
    ]
    out.append(publication_sql(settings.capture.publication_name, captured_tables(settings)))
    return out


def dedupe_statements(statements: list[str]) -> list[str]:
    """The statements in order, each once (the fence and signal DDL share CREATE SCHEMA)."""
    seen: set[str] = set()
    return [s for s in statements if not (s in seen or seen.add(s))]  # type: ignore[func-returns-value]


# -- WAL headroom ------------------------------------------------------------------------------
@dataclass(frozen=True)
class WalHeadroom:
    """How fast the legacy database writes WAL, and how long capture can stop before the slot's
    retained WAL fills the disk (or reaches ``max_slot_wal_keep_size``, where PostgreSQL drops the
    slot's WAL and capture must start over with a new snapshot)."""

    rate_bytes_s: float | None
    """WAL written per second: the larger of a short sample and pg_stat_wal's average since its
    reset (None: neither readable)."""
    rate_source: str
    retained_bytes: int | None
    """WAL the slot holds back now (None: no slot yet)."""
    free_bytes: int | None
    """Free space of the WAL directory's file system (None: not readable from here)."""
    keep_size_bytes: int | None
    """``max_slot_wal_keep_size`` (None: unlimited)."""

    @property
    def room_bytes(self) -> int | None:
        """WAL that may still pile up: the free disk (the retained WAL already takes its room),
        or what is left below ``max_slot_wal_keep_size``, whichever is less (None: unknown)."""
        limits = [self.free_bytes] if self.free_bytes is not None else []
        if self.keep_size_bytes is not None:
            limits.append(max(0, self.keep_size_bytes - (self.retained_bytes or 0)))
        return min(limits) if limits else None

    @property
    def seconds(self) -> float | None:
        """How long capture can stop from now (None: unknown)."""
        if self.room_bytes is None or not self.rate_bytes_s:
            return None
        return self.room_bytes / self.rate_bytes_s

    def describe(self) -> str:
        """One line for people: rate, what limits it, how long capture can stop."""
        rate = (
            f"{_size(self.rate_bytes_s)}/s ({self.rate_source})"
            if self.rate_bytes_s is not None
            else "unknown (pg_stat_wal not readable and no sample taken)"
        )
        free = (
            _size(self.free_bytes)
            if self.free_bytes is not None
            else "unknown (not readable from here)"
        )
        keep = _size(self.keep_size_bytes) if self.keep_size_bytes is not None else "unlimited"
        held = (
            f"the slot holds {_size(self.retained_bytes)}"
            if self.retained_bytes is not None
            else "no slot yet"
        )
        line = f"legacy WAL rate {rate}; {held}; free disk {free}; max_slot_wal_keep_size {keep}"
        s = self.seconds
        if s is not None:
            by_keep = self.free_bytes is None or self.room_bytes != self.free_bytes
            which = "the slot is invalidated" if by_keep else "the disk fills"
            return f"{line}: capture can stop for about {_duration(s)} before {which}"
        if self.rate_bytes_s == 0:
            return f"{line}: no WAL written lately, headroom not estimable"
        return f"{line}: how long capture can stop is unknown"

    def pause_cost(self) -> str:
        """While capture is paused (``crossfade pause capture``): the WAL the slot retains and
        how long the pause can last at the legacy's WAL rate, for one status line."""
        held = (
            f"the slot retains {_size(self.retained_bytes)} of WAL"
            if self.retained_bytes is not None
            else "no slot yet"
        )
        s = self.seconds
        if s is None:
            return f"{held}; how long the pause can last is unknown (WAL rate or free disk not readable)"
        by_keep = self.free_bytes is None or self.room_bytes != self.free_bytes
        which = "the slot is invalidated" if by_keep else "the disk fills"
        return f"{held}; at the legacy's WAL rate the pause can last about {_duration(s)} before {which}"

    def as_dict(self) -> dict[str, object]:
        return {
            "rate_bytes_s": self.rate_bytes_s,
            "rate_source": self.rate_source,
            "retained_bytes": self.retained_bytes,
            "free_bytes": self.free_bytes,
            "max_slot_wal_keep_size_bytes": self.keep_size_bytes,
            "seconds": self.seconds,
            "pause_cost": self.pause_cost(),
        }


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _local_free_bytes(conn: psycopg.Connection) -> int | None:
    """Free space of the server's WAL directory, when that directory is on this machine: read
    only when ``data_directory`` is visible to this role and its ``global/pg_control`` names the
    same cluster (system identifier) as the server we are connected to. PostgreSQL has no SQL
    function for free disk space: anywhere else it is unknown."""
    try:
        row = conn.execute(
            "SELECT current_setting('data_directory'), system_identifier FROM pg_control_system()"
        ).fetchone()
    except psycopg.Error:
        return None
    if row is None:
        return None
    data_dir, sysid = Path(str(row[0])), int(row[1])
    try:
        with open(data_dir / "global" / "pg_control", "rb") as fh:
            local_id = struct.unpack("<Q", fh.read(8))[0]
        if local_id != sysid:
            return None
        st = os.statvfs(data_dir / "pg_wal")
    except OSError:
        return None
    return int(st.f_bavail * st.f_frsize)


def wal_headroom(conn: psycopg.Connection, slot: str, sample_s: float = 0.0) -> WalHeadroom:
    """Estimate (see :class:`WalHeadroom`). ``sample_s`` > 0 also samples ``pg_current_wal_lsn()``
    twice that far apart. Never raises for an unreadable figure: it is None and said so."""
    rates: list[tuple[float, str]] = []
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT wal_bytes::float8, EXTRACT(EPOCH FROM clock_timestamp() - stats_reset)::float8 "
                "FROM pg_stat_wal"
            ).fetchone()
        if row and row[0] is not None and row[1]:
            rates.append((float(row[0]) / float(row[1]), "pg_stat_wal average since its reset"))
    except psycopg.Error:
        pass
    if sample_s > 0:
        a = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        t0 = time.monotonic()
        time.sleep(sample_s)
        b = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::float8", (a[0],) if a else (None,)
        ).fetchone()
        if b and b[0] is not None:
            rates.append((float(b[0]) / (time.monotonic() - t0), f"sampled over {sample_s:g} s"))
    rate, source = max(rates) if rates else (None, "unknown")
    held = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    keep = conn.execute(
        "SELECT setting::bigint * CASE unit WHEN 'MB' THEN 1048576 WHEN 'kB' THEN 1024 ELSE 1 END "
        "FROM pg_settings WHERE name = 'max_slot_wal_keep_size'"
    ).fetchone()
    return WalHeadroom(
        rate,
        source,
        int(held[0]) if held and held[0] is not None else None,
        _local_free_bytes(conn),
        int(keep[0]) if keep and keep[0] is not None and keep[0] >= 0 else None,
    )


# -- running the DBA's script ------------------------------------------------------------------
def capture_role(settings: Settings, role: str | None = None) -> tuple[str, str]:
    """(role, database): who capture connects as (``role`` or the source DSN's user), and where."""
    from crossfade.config import parse_dsn
    from crossfade.errors import ConfigError

    d = parse_dsn(settings.source.conninfo)
    user = role or d.get("user")
    if not user:
        raise ConfigError(
            "the source DSN names no user, so the capture role is not known",
            "put the user in source.dsn, or pass --role",
        )
    return user, d.get("dbname") or d.get("user") or user


def run_prepare(
    conn: psycopg.Connection, statements: list[str], role: str, password: str | None
) -> bool:
    """Run the statements in one transaction on a privileged connection. When this creates the
    role and ``password`` is given (the source DSN's), the role gets it (never printed).
    Returns whether the role was created."""
    with conn.transaction():
        existed = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        for stmt in statements:
            conn.execute(stmt)  # our own SQL, built from names
        if existed is None and password:
            conn.execute(
                psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    psycopg.sql.Identifier(role), psycopg.sql.Literal(password)
                )
            )
    return existed is None
