"""The principal cache's rules: entries live ``seconds`` from the read that made them, expired
keys are never served, the cache is bounded, and ``seconds=0`` turns it off."""

from __future__ import annotations

import time
from datetime import timedelta

from conveyor.clock import utcnow
from conveyor.domain.access import Principal
from conveyor.store.principal_cache import PrincipalCache, token_digest


def _principal(key_id: int = 1) -> Principal:
    return Principal(key_id, f"p{key_id}", "k", 1, "default", "member", None)


def test_entries_live_at_most_their_seconds_from_the_read() -> None:
    cache = PrincipalCache(seconds=0.2)
    digest = token_digest("p1.secret")
    cache.put(digest, _principal(), read_at=time.monotonic() - 0.3, expires_at=None)
    assert cache.get(digest) is None  # the read that produced it began too long ago
    cache.put(digest, _principal(), read_at=time.monotonic(), expires_at=None)
    assert cache.get(digest) == _principal()
    assert cache.get(token_digest("p1.other")) is None
    cache.clear()
    assert cache.get(digest) is None


def test_an_expired_key_is_not_served_from_the_cache() -> None:
    cache = PrincipalCache(seconds=60)
    digest = token_digest("p1.secret")
    cache.put(digest, _principal(), read_at=time.monotonic(), expires_at=utcnow() - timedelta(seconds=1))
    assert cache.get(digest) is None


def test_the_cache_is_bounded_and_can_be_off() -> None:
    cache = PrincipalCache(seconds=60, max_entries=8)
    for n in range(50):
        cache.put(token_digest(f"p{n}.s"), _principal(n), read_at=time.monotonic(), expires_at=None)
        assert len(cache._entries) <= 8
    off = PrincipalCache(seconds=0)
    off.put(token_digest("p1.s"), _principal(), read_at=time.monotonic(), expires_at=None)
    assert off.get(token_digest("p1.s")) is None
