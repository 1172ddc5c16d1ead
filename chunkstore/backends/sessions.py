"""Session liveness, shared by catalog implementations.

A session is alive while it heartbeats. On the machine that runs it we can tell
sooner: a session whose process has exited is dead at once, which lets gc reclaim
what a killed put left without waiting for the lease to run out.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

# A writer heartbeats every LEASE/4 from a background thread, so only a process that is
# stopped or cut off for the whole lease loses its pins (and then its commit fails safely).
DEFAULT_LEASE_SECONDS = 30 * 60
HOST = socket.gethostname()
# Process IDs are a C pid_t (32-bit signed); os.kill raises OverflowError beyond it, and 0 or
# a negative number would name a process group. A session recorded with another is no process.
MAX_PID = 2**31 - 1


def new_session_id() -> str:
    return uuid.uuid4().hex


def now_ns() -> int:
    return time.time_ns()


def session_is_dead(host: str, pid: int, heartbeat_ns: int, lease_seconds: float, at_ns: int, local_host: str) -> bool:
    """local_host: what this machine's sessions record as their host (a catalog's session_host)."""
    if at_ns - heartbeat_ns > lease_seconds * 1_000_000_000:
        return True
    if host == local_host and pid != os.getpid():
        if not 0 < pid <= MAX_PID:
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False
