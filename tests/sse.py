"""A small Server-Sent-Events reader for tests: reads a stream in a thread, keeps every event."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str
    data: Any


class SseReader:
    """``with SseReader(url, path, key=...) as reader: reader.wait(lambda e: ...)``."""

    def __init__(
        self,
        base_url: str,
        path: str,
        *,
        key: str | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
    ) -> None:
        all_headers = {"Accept": "text/event-stream", **(headers or {})}
        if key:
            all_headers["Authorization"] = f"Token {key}"
        self.client = httpx.Client(
            base_url=base_url, headers=all_headers, cookies=cookies, timeout=httpx.Timeout(10, read=60)
        )
        self.path, self.params = path, params
        self.events: list[SseEvent] = []
        self.status_code: int | None = None
        self.body: str = ""
        self.ended = threading.Event()  # the server closed the stream
        self.opened = threading.Event()
        self.error: BaseException | None = None
        self._closing = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> SseReader:
        self._thread.start()
        if not self.opened.wait(15):
            raise AssertionError("the event stream did not open")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing = True
        # Closing a client does not wake a thread blocked in recv(); shutting the socket down does.
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self.client.close()

    def _read(self) -> None:
        try:
            with self.client.stream("GET", self.path, params=self.params) as response:
                self.status_code = response.status_code
                stream = response.extensions.get("network_stream")
                if stream is not None:
                    self._socket = stream.get_extra_info("socket")
                self.opened.set()
                if response.status_code != 200:
                    self.body = response.read().decode()
                    return
                fields: dict[str, str] = {}
                data: list[str] = []
                for line in response.iter_lines():
                    if line == "":
                        if data:
                            event = SseEvent(
                                fields.get("id"), fields.get("event", "message"), json.loads("\n".join(data))
                            )
                            with self._lock:
                                self.events.append(event)
                        fields, data = {}, []
                    elif line.startswith(":"):
                        continue
                    else:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if name == "data":
                            data.append(value)
                        else:
                            fields[name] = value
                self.ended.set()
        except BaseException as exc:
            if not self._closing:
                self.error = exc
        finally:
            self.opened.set()

    def snapshot(self) -> list[SseEvent]:
        with self._lock:
            return list(self.events)

    def of(self, kind: str) -> list[SseEvent]:
        return [e for e in self.snapshot() if e.event == kind]

    def wait(
        self, predicate: Callable[[SseEvent], bool], timeout: float = 30, what: str = "event"
    ) -> SseEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.snapshot():
                if predicate(event):
                    return event
            if self.ended.is_set() or self.error is not None:
                break
            time.sleep(0.02)
        raise AssertionError(
            f"no {what} within {timeout}s (ended={self.ended.is_set()}, error={self.error!r}); "
            f"got {[(e.event, e.data.get('status') or e.data.get('to_status')) for e in self.snapshot()]}"
        )
