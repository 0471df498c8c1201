"""URL inputs: ``http(s)://`` fetched at submit, streamed under a byte cap and a deadline.

By default a URL may not reach the server's own network: every address its host resolves
to must be public (not loopback, private, link-local, multicast, reserved or unspecified),
and the connection is then made to the checked address itself (the ``Host`` header and TLS
SNI keep the original name), so a DNS answer that changes between the check and the connect
cannot smuggle a private address in. Redirects are followed by hand, each hop checked the
same way, up to ``url_max_redirects``. ``CONVEYOR_ALLOW_PRIVATE_URLS=true`` lifts the guard.

Used at submit (the strict path) and by workers (``conveyor.worker.fetching``), which retry the
failures marked ``transient`` (connection errors, timeouts, HTTP 429 and 5xx).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from conveyor.errors import AddressNotAllowed, InputUnavailable, InvalidInput, TooLarge
from conveyor.settings import Settings

SCHEMES = ("http", "https")
REDIRECTS = (301, 302, 303, 307, 308)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class UrlPolicy:
    max_bytes: int
    timeout: float
    max_redirects: int
    allow_private: bool

    @classmethod
    def of(cls, settings: Settings) -> UrlPolicy:
        """The server's policy for URL inputs (caps, timeout, redirects, the address guard)."""
        return cls(
            max_bytes=settings.max_input_bytes,
            timeout=settings.url_timeout_seconds,
            max_redirects=settings.url_max_redirects,
            allow_private=settings.allow_private_urls,
        )


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is a globally routable unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The TLS settings of every fetch, built once: what ``httpx.Client(trust_env=False)`` would
    build per client (certifi's CA bundle, hostname checks), which costs about 25 ms of CPU each
    time and bounded a worker to about 35 fetches/s. An ``SSLContext`` is safe to share."""
    return httpx.create_ssl_context(trust_env=False)


def resolve(host: str, port: int, label: str) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        message = f"Input {label!r}: cannot resolve host {host!r} ({exc})."
        raise InputUnavailable(message, input=label) from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def fetch(url: str, label: str, policy: UrlPolicy) -> bytes:
    """The bytes at ``url``; a clear 4xx error naming the input when that is not possible."""
    deadline = time.monotonic() + policy.timeout
    with stream(url, label, policy) as response:
        try:
            return _read_capped(response, label, policy, deadline)
        except httpx.HTTPError as exc:
            raise _unavailable(exc, label, url, policy) from None


@contextmanager
def stream(url: str, label: str, policy: UrlPolicy) -> Iterator[httpx.Response]:
    """The open ``200`` response of ``url`` after its redirects, every hop checked; the body is
    not read yet (a manifest is read as a stream of lines). A clear 4xx error otherwise."""
    timeout = httpx.Timeout(policy.timeout)
    with httpx.Client(
        timeout=timeout, follow_redirects=False, trust_env=False, verify=_tls_context()
    ) as client:
        current = url
        for _hop in range(policy.max_redirects + 1):
            request = _pinned_request(client, current, label, policy)
            try:
                response = client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise _unavailable(exc, label, current, policy) from None
            try:
                if response.status_code in REDIRECTS and "location" in response.headers:
                    current = urljoin(current, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise InputUnavailable(
                        f"Input {label!r}: {current} answered HTTP {response.status_code}.",
                        input=label,
                        status=response.status_code,
                        transient=response.status_code == 429 or response.status_code >= 500,
                    )
                yield response
                return
            finally:
                response.close()
    raise InputUnavailable(
        f"Input {label!r}: more than {policy.max_redirects} redirects from {url}.", input=label
    )


def _unavailable(exc: httpx.HTTPError, label: str, url: str, policy: UrlPolicy) -> InputUnavailable:
    """The 4xx for a transport failure while connecting or reading (timeouts say so); marked
    ``transient``, so that a worker's fetch may try again."""
    if isinstance(exc, httpx.TimeoutException):
        return InputUnavailable(
            f"Input {label!r}: {url} timed out after {policy.timeout:g} s.", input=label, transient=True
        )
    return InputUnavailable(f"Input {label!r}: cannot fetch {url}: {exc}.", input=label, transient=True)


def _pinned_request(client: httpx.Client, url: str, label: str, policy: UrlPolicy) -> httpx.Request:
    """A request for ``url`` that connects to a checked address of its host."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise InvalidInput(f"Input {label!r}: {url!r} is not an http(s) URL.", input=label)
    if parts.username or parts.password:
        raise InvalidInput(f"Input {label!r}: credentials in URLs are not accepted.", input=label)
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInput(f"Input {label!r}: {url!r} has an invalid port.", input=label) from None
    addresses = resolve(host, port, label)
    if not addresses:
        raise InputUnavailable(f"Input {label!r}: host {host!r} has no address.", input=label)
    if not policy.allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise AddressNotAllowed(
                f"Input {label!r}: {host!r} resolves to {refused[0]}, a loopback, private, link-local "
                "or multicast address; such URLs are refused unless CONVEYOR_ALLOW_PRIVATE_URLS=true.",
                input=label,
                address=str(refused[0]),
            )
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return client.build_request(
        "GET", pinned, headers={"Host": host_header, "Accept": "*/*"}, extensions=extensions
    )


def _read_capped(response: httpx.Response, label: str, policy: UrlPolicy, deadline: float) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise TooLarge(
            f"Input {label!r} is {declared} bytes, over the {policy.max_bytes}-byte cap per input.",
            input=label,
        )
    body = bytearray()
    for chunk in response.iter_bytes(64 * 1024):
        body += chunk
        if len(body) > policy.max_bytes:
            raise TooLarge(f"Input {label!r} is over the {policy.max_bytes}-byte cap per input.", input=label)
        if time.monotonic() > deadline:
            raise InputUnavailable(
                f"Input {label!r}: download took longer than {policy.timeout:g} s.",
                input=label,
                transient=True,
            )
    return bytes(body)
