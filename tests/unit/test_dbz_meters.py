"""capture/dbz_meters.py, in a child process with capture's JVM: on a real Debezium
``DefaultStreamingChangeEventSourceMetrics`` (and ``DefaultSnapshotChangeEventSourceMetrics``), an event asks the connector's
``EventMetadataProvider`` for the JMX ``LastEvent`` text and the lag until capture quiets the
metrics, and nothing after (the event counters still count); a Debezium whose classes differ
leaves them with one WARNING, capture going on."""

from __future__ import annotations

import shutil

import pytest

from tests.jvm_child import jvm_child

_CHILD = r"""
import json, logging
import jpype
from crossfade.capture.batch import start_jvm
from crossfade.capture.dbz_meters import DebeziumMeters, quiet_metrics
from crossfade.config.settings import DEFAULT_JVM_OPTIONS

start_jvm(list(DEFAULT_JVM_OPTIONS))
J = jpype.JClass
calls = []

@jpype.JImplements("io.debezium.pipeline.source.spi.EventMetadataProvider")
class Provider:
    @jpype.JOverride
    def getEventTimestamp(self, source, offset, key, value):
        calls.append("timestamp")
        return J("java.time.Instant").now()

    @jpype.JOverride
    def getEventSourcePosition(self, source, offset, key, value):
        calls.append("position")
        return J("java.util.HashMap")()

    @jpype.JOverride
    def getTransactionId(self, source, offset, key, value):
        calls.append("transaction")
        return "7"

    @jpype.JOverride
    def toSummaryString(self, source, offset, key, value):
        calls.append("summary")
        return "the LastEvent text"

config = J("io.debezium.config.Configuration").from_(J("java.util.HashMap")({
    "topic.prefix": "cf", "database.hostname": "localhost", "database.dbname": "db",
    "database.user": "u", "plugin.name": "pgoutput"}))
pg_config = J("io.debezium.connector.postgresql.PostgresConnectorConfig")(config)
context = J("io.debezium.connector.common.CdcSourceTaskContext")(
    config, pg_config, J("java.util.HashMap")())
metrics = J("io.debezium.pipeline.metrics.DefaultStreamingChangeEventSourceMetrics")(
    context, None, Provider(), None)
create = J("io.debezium.data.Envelope").Operation.CREATE

def event():
    calls.clear()
    metrics.onEvent(None, None, None, None, None, create)
    return sorted(calls)

out = {"before": event(), "last_before": str(metrics.getLastEvent())}
quiet_metrics(metrics)
metrics.reset()
out["after"] = event()
out["last_after"] = None if metrics.getLastEvent() is None else str(metrics.getLastEvent())
out["seen"] = int(metrics.getTotalNumberOfEventsSeen())
out["lag"] = int(metrics.getMilliSecondsBehindSource())

snap = J("io.debezium.pipeline.metrics.DefaultSnapshotChangeEventSourceMetrics")(
    context, None, Provider())

def snapshot_row():
    calls.clear()
    snap.onEvent(None, None, None, None, None, J("io.debezium.data.Envelope").Operation.READ)
    return sorted(calls)

out["snapshot_before"] = snapshot_row()
quiet_metrics(snap)
snap.reset()
out["snapshot_after"] = snapshot_row()
out["snapshot_seen"] = int(snap.getTotalNumberOfEventsSeen())

warned = []
handler = logging.Handler()
handler.emit = lambda record: warned.append(record.levelname)
logging.getLogger("crossfade.capture.dbz_meters").addHandler(handler)
meters = DebeziumMeters()
meters.check()  # no engine yet: nothing
meters.attach(J("java.lang.Object")())  # not Debezium's AsyncEmbeddedEngine
meters.check()
meters.check()
out["warned"] = warned
print("OUT " + json.dumps(out))
"""


@pytest.mark.skipif(shutil.which("java") is None, reason="no java on PATH")
def test_quieted_streaming_metrics_ask_the_provider_nothing_and_still_count() -> None:
    out = jvm_child(_CHILD, "OUT")
    assert out["before"] == ["position", "summary", "timestamp", "transaction"]
    assert out["last_before"] == "the LastEvent text"
    assert out["after"] == []  # no LastEvent text, no lag hand-off, no position
    assert out["last_after"] is None
    assert out["seen"] == 1  # the counters still count
    assert out["warned"] == ["WARNING"]  # once, and check() raised nothing


@pytest.mark.skipif(shutil.which("java") is None, reason="no java on PATH")
def test_quieted_snapshot_metrics_ask_the_provider_nothing_and_still_count() -> None:
    """``initial_load: debezium``: Debezium's snapshot metrics write ``LastEvent`` per row too."""
    out = jvm_child(_CHILD, "OUT")
    assert "summary" in out["snapshot_before"]
    assert out["snapshot_after"] == []
    assert out["snapshot_seen"] == 1
