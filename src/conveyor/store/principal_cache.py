"""Recently authenticated API keys, kept for well under a second.

Status polling is the hottest request a job service serves, and looking a key up (a query, and
with project-bound keys a second one) cost more than the job read itself. So a key that
authenticated keeps its ``Principal`` here for ``seconds`` (default 0.5) after the read that
produced it *started*: a revocation, a role or membership change, committed by any process on the
same database, is seen by every request that arrives later than ``seconds`` after the commit
(a read that began before the commit cannot outlive it by more). This process's own key and
membership writes clear the cache at once. An expiry time is checked on every hit.

Entries are keyed by a SHA-256 digest of the whole token (the secret itself is not kept), and
failures are never cached: a wrong or revoked key always reaches the database.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from conveyor.clock import utcnow
from conveyor.domain.access import Principal

CACHE_SECONDS = 0.5  # < 1 s: a revocation is refused within a second, as the API promises
MAX_ENTRIES = 4096


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    valid_until: float  # time.monotonic()
    expires_at: datetime | None  # the key's own expiry


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class PrincipalCache:
    def __init__(self, seconds: float = CACHE_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: dict[bytes, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if time.monotonic() >= entry.valid_until or (
            entry.expires_at is not None and entry.expires_at <= utcnow()
        ):
            self._entries.pop(digest, None)
            return None
        return entry.principal

    def put(
        self, digest: bytes, principal: Principal, *, read_at: float, expires_at: datetime | None
    ) -> None:
        """Keep ``principal`` until ``seconds`` after ``read_at`` (monotonic, taken before the read)."""
        if self.seconds <= 0:
            return
        valid_until = read_at + self.seconds
        with self._lock:
            if len(self._entries) >= self.max_entries:
                now = time.monotonic()
                for key in [k for k, e in self._entries.items() if e.valid_until <= now]:
                    del self._entries[key]
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()  # many live keys at once: start over rather than grow
            self._entries[digest] = _Entry(principal, valid_until, expires_at)

    def clear(self) -> None:
        """Forget every entry (a key or membership changed in this process)."""
        with self._lock:
            self._entries.clear()
