"""Who runs a command, for audit rows (``CROSSFADE_OPERATOR`` wins over the OS user)."""

from __future__ import annotations

import getpass
import os
import socket


def operator() -> str:
    name = os.environ.get("CROSSFADE_OPERATOR")
    if name:
        return name
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"
