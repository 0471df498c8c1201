"""The dispatcher contract.

The store is the source of truth for which chunks exist and who holds them; a dispatcher
only tells workers that there is work (local: wake-up signals; Celery: one task per chunk).
So a dispatcher may lose or duplicate a message without losing or double-counting items.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.store import Store


class Dispatcher(ABC):
    #: Shown as the job's ``dispatch_mode``.
    mode: str = "internal"

    @abstractmethod
    def enqueue(self, chunk_ids: list[int]) -> None:
        """These chunks became QUEUED (after commit); they may belong to several jobs."""

    def recover(self, store: Store) -> int:
        """Called once when an API server starts: send what was queued while none was running.
        Returns a count (default: nothing to send, workers find queued chunks in the store)."""
        return 0

    def retry_pending(self) -> None:  # noqa: B027 - default: nothing is ever left unsent
        """Called by the sweeper each period: send what an earlier ``enqueue`` could not."""

    def reconcile(self, store: Store) -> int:
        """Called by the sweeper each period: send again what the transport lost. Returns a count."""
        return 0

    def revoke(self, job_id: int) -> None:  # noqa: B027 - default: workers notice the cancel flag
        """The job was canceled or finished; queued messages for it may be dropped."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections."""

    def check(self) -> str | None:
        """For /readyz: None when there is no external part, "ok", or what is wrong."""
        return None


class NullDispatcher(Dispatcher):
    """For processes that only write (CLI, tests): workers find queued chunks by polling."""

    def enqueue(self, chunk_ids: list[int]) -> None:
        return None
