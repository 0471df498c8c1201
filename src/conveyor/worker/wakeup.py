"""The pipe protocol between the local worker pool (``worker/pool.py``) and its worker processes
(``worker/process.py``).

Only pipes and signals cross process boundaries here, never ``multiprocessing.Event``: an
Event whose waiter is killed wedges the next ``set()`` forever, and ``kill -9`` of any worker
must leave the server fully working.
- parent -> worker: one pipe per worker process; a byte means "look for work" (``notify``,
  read with ``drain``).
- worker -> parent: one shared "inbox" pipe; small fixed-size messages (atomic writes) say
  ``READY`` or ``WAKE_ALL`` (a delay stage released chunks), sent with ``send``, read with
  ``read_messages``.
- stop: SIGTERM to each worker; it finishes its batch, writes back, re-queues the rest.
"""

from __future__ import annotations

import contextlib
import os
import struct
from multiprocessing.connection import Connection

#: Worker -> parent message: kind (1 byte), slot, pid.
MESSAGE = struct.Struct("!cHI")
READY = b"R"
WAKE_ALL = b"W"


def notify(fd: int) -> None:
    """Write one byte without ever blocking: a full pipe already holds a pending wake-up."""
    with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
        os.write(fd, b"w")


def drain(fd: int) -> bool:
    """Read every pending wake-up. False when the pipe is closed: the server is gone."""
    try:
        while True:
            if not os.read(fd, 4096):
                return False
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False


def send(inbox: Connection, kind: bytes, slot: int) -> None:
    with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
        os.write(inbox.fileno(), MESSAGE.pack(kind, slot, os.getpid()))


def read_messages(inbox: int) -> list[tuple[bytes, int, int]]:
    """The whole messages waiting in the inbox, as (kind, slot, pid)."""
    data = os.read(inbox, MESSAGE.size * 256)
    return [
        MESSAGE.unpack_from(data, offset)
        for offset in range(0, len(data) - len(data) % MESSAGE.size, MESSAGE.size)
    ]
