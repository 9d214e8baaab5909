"""The new database's owner: the tables crossfade creates there (``ddl``, with legacy's whole
definition read and compared by ``definition``) and crossfade's own bookkeeping schema with every
query on it (the package ``store``: offsets, ledger, fences, tombstones, heartbeats, audit...).
Capture, sync, verify, cutover and the console call these; none of them keeps SQL of its own
against the bookkeeping schema's tables."""
