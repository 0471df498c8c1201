"""Workers fetch: an item's bytes are read from its reference just before the model needs them.

``Fetcher`` reads one reference: ``http(s)://`` through ``conveyor.inputs.url`` (the SSRF guard
on every hop, connections pinned to the checked address, the byte cap and the deadline, as at
submit), ``s3://bucket/key`` through ``conveyor.inputs.s3`` (with the job's own credentials
when it has them), ``blob:<key>`` and ``collection-item:<id>`` through readers the worker wires
in. Failures marked transient (connection errors, timeouts, HTTP 429 and 5xx, S3 throttling)
are retried ``fetch_retries`` times with exponential backoff from ``fetch_backoff_seconds``,
capped at 10 s; a 404, a refused address or an input over the cap fails at once.

``Prefetch`` runs a chunk's fetches ``fetch_concurrency`` at a time in threads, ahead of the
model by at most ``window`` items (the executor uses concurrency + batch size), so fetch and
decode overlap the model's compute while memory stays bounded. The executor takes batches in
item order; an item whose fetch failed comes back with the error its outcome records
(``input_unavailable: …``). On a stop, nothing waits for a fetch in flight: its thread (a
daemon, bounded by the URL timeout) finishes alone and its result is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from conveyor.clock import utcnow
from conveyor.domain.work import ItemInput
from conveyor.errors import AddressNotAllowed, ConveyorError, InputUnavailable, InvalidInput, TooLarge
from conveyor.inputs import s3, stored, url
from conveyor.inputs.s3 import S3Credentials
from conveyor.settings import Settings
from conveyor.store import Store

log = logging.getLogger(__name__)

#: Longest wait between two attempts of one fetch.
BACKOFF_CAP_SECONDS = 10.0
#: How often waiting code looks at the stop signal.
POLL_SECONDS = 0.05

#: ``blob:<key>`` -> the bytes (raises NotFound/OSError/... when the blob is gone).
BlobReader = Callable[[str], bytes]
#: ``collection-item:<id>`` -> (data, ref): the stored bytes, or the ref they are at when empty.
CollectionItemReader = Callable[[int], tuple[bytes, str | None]]
#: What Prefetch calls per item: its bytes; ``stopping`` says the result is no longer wanted.
Loader = Callable[[ItemInput, Callable[[], bool]], bytes]


def _never() -> bool:
    return False


class Fetcher:
    """Reads references into bytes under the server's input policy; safe to share between threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        read_blob: BlobReader | None = None,
        read_collection_item: CollectionItemReader | None = None,
    ) -> None:
        self.settings = settings
        self.read_blob = read_blob
        self.read_collection_item = read_collection_item
        self.policy = url.UrlPolicy.of(settings)
        self._s3: dict[S3Credentials | None, s3.S3Source] = {}
        self._s3_lock = threading.Lock()

    def fetch(
        self,
        ref: str,
        label: str,
        *,
        credentials: S3Credentials | None = None,
        stop: Callable[[], bool] = _never,
    ) -> bytes:
        """The bytes at ``ref``. Raises InputUnavailable, AddressNotAllowed, TooLarge or
        InvalidInput, each naming ``label`` and the reason."""
        if ref.startswith(("http://", "https://")):
            return self._retrying(lambda: url.fetch(ref, label, self.policy), stop)
        if ref.startswith("s3://"):
            bucket, key = s3.parse(ref, label)
            if not key or key.endswith("/"):
                raise InvalidInput(f"Input {label!r}: {ref} is a prefix, not one object.", input=label)
            source = self._s3_source(credentials)
            return self._retrying(lambda: source.read(bucket, key, label), stop)
        if ref.startswith("blob:"):
            return self._blob(ref[len("blob:") :], label)
        if ref.startswith("collection-item:"):
            return self._collection_item(ref, label, credentials, stop)
        scheme = ref.split(":", 1)[0] if ":" in ref else ref[:20]
        raise InvalidInput(f"Input {label!r}: unknown kind of reference {scheme!r}.", input=label)

    def fetch_item(
        self, item: ItemInput, *, credentials: S3Credentials | None = None, stop: Callable[[], bool] = _never
    ) -> bytes:
        """The bytes of ``item`` (its ``ref``); a text item's bytes must be UTF-8."""
        if item.ref is None:
            return item.data
        data = self.fetch(item.ref, item.name, credentials=credentials, stop=stop)
        if item.kind == "text":
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(
                    f"Input {item.name!r}: {item.ref} is not UTF-8 text (byte {exc.start}), and the "
                    "item is a text input.",
                    input=item.name,
                ) from None
        return data

    def counts_input_bytes(self, item: ItemInput) -> bool:
        """Whether the bytes read for ``item`` count in its job's input bytes: read from a URL or
        S3, yes; stored by Conveyor, no (those were counted at submit)."""
        return item.ref is not None and not stored.is_stored(item.ref)

    # ---------------------------------------------------------------- kinds
    def _retrying(self, attempt: Callable[[], bytes], stop: Callable[[], bool]) -> bytes:
        retries = self.settings.fetch_retries
        for number in range(retries + 1):
            try:
                return attempt()
            except InputUnavailable as exc:
                if not exc.detail.get("transient"):
                    raise
                if number == retries or not _wait(self._backoff(number), stop):
                    tries = f"{number + 1} attempt{'s' if number else ''}"
                    raise InputUnavailable(f"{exc.message} (gave up after {tries})", **exc.detail) from None
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _backoff(self, number: int) -> float:
        return float(min(BACKOFF_CAP_SECONDS, self.settings.fetch_backoff_seconds * 2**number))

    def _s3_source(self, credentials: S3Credentials | None) -> s3.S3Source:
        with self._s3_lock:  # boto3's default session is not safe to build clients from in parallel
            source = self._s3.get(credentials)
            if source is None:
                source = self._s3[credentials] = s3.S3Source(self.settings, credentials)
            return source

    def _blob(self, key: str, label: str) -> bytes:
        if self.read_blob is None:
            raise InvalidInput(f"Input {label!r}: this worker cannot read blob references.", input=label)
        try:
            return self.read_blob(key)
        except ConveyorError:
            raise
        except (OSError, KeyError, LookupError) as exc:
            raise InputUnavailable(
                f"Input {label!r}: its stored bytes (blob {key}) are gone: {type(exc).__name__}.", input=label
            ) from None

    def _collection_item(
        self, ref: str, label: str, credentials: S3Credentials | None, stop: Callable[[], bool]
    ) -> bytes:
        raw = ref[len("collection-item:") :]
        if not raw.isdigit():
            raise InvalidInput(
                f"Input {label!r}: {ref!r} is not a collection-item:<id> reference.", input=label
            )
        if self.read_collection_item is None:
            raise InvalidInput(f"Input {label!r}: this worker cannot read collection items.", input=label)
        try:
            data, inner = self.read_collection_item(int(raw))
        except ConveyorError as exc:
            raise InputUnavailable(
                f"Input {label!r}: collection item {raw}: {exc.message}", input=label
            ) from None
        if inner is None:
            return data
        if inner.startswith("collection-item:"):
            raise InvalidInput(f"Input {label!r}: collection item {raw} refers to another one.", input=label)
        return self.fetch(inner, label, credentials=credentials, stop=stop)


def _wait(seconds: float, stop: Callable[[], bool]) -> bool:
    """Sleep ``seconds`` unless ``stop`` turns true first (then False)."""
    deadline = time.monotonic() + seconds
    while not stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, POLL_SECONDS))
    return False


def outcome_error(exc: Exception) -> str:
    """The error a failed fetch leaves on its item: ``<code>: <reason>``."""
    if isinstance(exc, TooLarge):
        code = "input_too_large"
    elif isinstance(exc, AddressNotAllowed):
        code = "address_not_allowed"
    elif isinstance(exc, InputUnavailable) or not isinstance(exc, InvalidInput):
        code = "input_unavailable"
    else:
        code = "invalid_input"
    reason = exc.message if isinstance(exc, ConveyorError) else f"{type(exc).__name__}: {exc}"
    return f"{code}: {reason}"


@dataclass(frozen=True)
class Fetched:
    """An item as the prefetch hands it over: with its bytes in ``item.data``, or failed with
    ``error`` (then ``started_at``/``finished_at`` are when the fetch ran)."""

    item: ItemInput
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Prefetch:
    """A chunk's items in order, those with a ``ref`` fetched ``concurrency`` at a time ahead of
    the consumer by at most ``window`` items. ``take`` returns None once ``should_stop`` says so
    (and the fetch threads stop picking work); ``close`` does the same without waiting for them."""

    def __init__(
        self,
        load: Loader,
        items: Sequence[ItemInput],
        *,
        concurrency: int,
        window: int,
        should_stop: Callable[[], bool] = _never,
    ) -> None:
        self._load = load
        self._items = list(items)
        self._window = max(1, window)
        self._should_stop = should_stop
        self._closed = threading.Event()
        self._cond = threading.Condition()
        self._done: dict[int, Fetched] = {}
        self._next = 0  # the next index a fetch thread looks at
        self._consumed = 0  # items handed to the consumer
        self.most_ahead = 0  # the most items ever fetched or fetching ahead of the consumer
        wanted = sum(1 for item in self._items if item.ref is not None)
        self._threads = [
            threading.Thread(target=self._run, name=f"fetch-{n}", daemon=True)
            for n in range(min(max(1, concurrency), wanted))
        ]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stopping(self) -> bool:
        if not self._closed.is_set() and self._should_stop():
            self._closed.set()
        return self._closed.is_set()

    def close(self) -> None:
        """Stop picking work and drop what was fetched; a fetch in flight is not waited for."""
        self._closed.set()
        with self._cond:
            self._done.clear()
            self._cond.notify_all()

    def take(self, n: int) -> list[Fetched] | None:
        """The next ``n`` items (fewer at the end) in order, once each is fetched; None on a stop."""
        out: list[Fetched] = []
        with self._cond:
            while len(out) < n and self._consumed < len(self._items):
                if self.stopping():
                    self._cond.notify_all()
                    return None
                index = self._consumed
                item = self._items[index]
                got = Fetched(item) if item.ref is None else self._done.pop(index, None)
                if got is None:
                    self._cond.wait(POLL_SECONDS)
                    continue
                out.append(got)
                self._consumed += 1
                self._cond.notify_all()
        return out

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self.stopping():
                        return
                    while self._next < len(self._items) and self._items[self._next].ref is None:
                        self._next += 1
                    if self._next >= len(self._items):
                        return
                    if self._next - self._consumed < self._window:
                        break
                    self._cond.wait(POLL_SECONDS * 4)
                index = self._next
                self._next += 1
                self.most_ahead = max(self.most_ahead, self._next - self._consumed)
            fetched = self._fetch(self._items[index])
            with self._cond:
                if self._closed.is_set():
                    return
                self._done[index] = fetched
                self._cond.notify_all()

    def _fetch(self, item: ItemInput) -> Fetched:
        started = utcnow()
        try:
            data = self._load(item, self.stopping)
        except Exception as exc:
            if not isinstance(exc, ConveyorError):
                log.exception("fetching input %r failed", item.name)
            return Fetched(item, outcome_error(exc), started, utcnow())
        return Fetched(replace(item, data=data))


def store_fetcher(store: Store, settings: Settings) -> Fetcher:
    """A fetcher that also reads the bytes Conveyor stores itself: ``blob:`` refs from the blob
    store, ``collection-item:`` refs from the collection (each under the per-input cap)."""
    cap = settings.max_input_bytes

    def read_collection_item(item_id: int) -> tuple[bytes, str | None]:
        return stored.read(store, stored.collection_item_ref(item_id), cap), None

    return Fetcher(
        settings, read_blob=lambda ref: store.blobs.read(ref, cap), read_collection_item=read_collection_item
    )
