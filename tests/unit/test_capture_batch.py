"""BatchReader's per-record path (a Python list of records without a ``SourceRecord``: no
schemas beside them); the bulk path over a Java list, schemas included, runs in every integration
test (capture logs a warning if it ever falls back)."""

from __future__ import annotations

from crossfade.capture.batch import BatchReader


class _Rec:
    def __init__(self, dest: str, key: str | None, value: str | None) -> None:
        self._d, self._k, self._v = dest, key, value

    def destination(self) -> str:
        return self._d

    def key(self) -> str | None:
        return self._k

    def value(self) -> str | None:
        return self._v


def test_rows_keep_order_and_none_and_utf8() -> None:
    recs = [
        _Rec("p.public.t", '{"id":1}', '{"payload":"é ☃"}'),
        _Rec("p.public.t", '{"id":1}', None),
        _Rec("p.x", None, "{}"),
    ]
    assert BatchReader().read(recs) == [
        ("p.public.t", b'{"id":1}', '{"payload":"é ☃"}'.encode(), None, None),
        ("p.public.t", b'{"id":1}', None, None, None),
        ("p.x", None, b"{}", None, None),
    ]
