"""Per-key quotas: jobs per minute, unfinished jobs at once, input bytes per minute (all off by
default). Checked before a submission is written; over a quota -> 429 with Retry-After.

The check and the insert are not one transaction, so simultaneous submissions by one key may
overshoot a quota by the number of requests in flight: quotas are a brake, not a ledger.
"""

from __future__ import annotations

import math
from datetime import timedelta

from conveyor.clock import utcnow
from conveyor.domain.access import Principal
from conveyor.errors import TooManyRequests
from conveyor.settings import Settings
from conveyor.store import Store

WINDOW = timedelta(minutes=1)


class Quotas:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    @property
    def enabled(self) -> bool:
        s = self.settings
        return bool(s.quota_jobs_per_minute or s.quota_concurrent_jobs or s.quota_input_bytes_per_minute)

    def check(self, principal: Principal, input_bytes: int) -> None:
        if not self.enabled:
            return
        s = self.settings
        now = utcnow()
        usage = self.store.quotas.usage(principal.account_id, principal.key_prefix, now - WINDOW)
        retry_after = 1
        if usage.oldest_since is not None:
            retry_after = max(1, math.ceil((usage.oldest_since + WINDOW - now).total_seconds()))
        if s.quota_concurrent_jobs and usage.active_jobs >= s.quota_concurrent_jobs:
            raise TooManyRequests(
                f"This key has {usage.active_jobs} unfinished jobs, its quota is {s.quota_concurrent_jobs}; "
                "wait for one to finish (or cancel one).",
                retry_after=5,
                quota="concurrent_jobs",
            )
        if s.quota_jobs_per_minute and usage.jobs_since >= s.quota_jobs_per_minute:
            raise TooManyRequests(
                f"This key submitted {usage.jobs_since} jobs in the last minute, its quota is "
                f"{s.quota_jobs_per_minute}.",
                retry_after=retry_after,
                quota="jobs_per_minute",
            )
        limit = s.quota_input_bytes_per_minute
        if limit and usage.bytes_since + input_bytes > limit:
            raise TooManyRequests(
                f"This job's {input_bytes} input bytes would take this key past its quota of {limit} "
                f"bytes per minute ({usage.bytes_since} used).",
                retry_after=retry_after,
                quota="input_bytes_per_minute",
            )
