"""The one harness for a real Conveyor server in a subprocess: tests, benchmarks and the demos.

``ServerProcess`` picks a free loopback port, migrates the data directory and creates a key
(``conveyor keys create``), starts ``conveyor serve`` in its own session with its output in a
log file, waits for ``/readyz`` (or another path), and stops it with SIGTERM (SIGKILL of the
whole process group when it does not stop in time). Like procrastinate's ``testing`` module it
ships in the package, so fixtures only compose it.

A leaf helper: it imports nothing of Conveyor but the client's status set, and runs Conveyor
only as a command, exactly as a user would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from conveyor.client import TERMINAL_STATUSES

__all__ = [
    "CONVEYOR",
    "TERMINAL_STATUSES",
    "ServerProcess",
    "create_key",
    "free_port",
    "http_worker",
    "kill_process_group",
    "postgres_database",
    "run_cli",
]

# The `conveyor` command of this interpreter (works without the console script on PATH).
CONVEYOR: list[str] = [sys.executable, "-m", "conveyor"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kill_process_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal the whole process group led by ``pid`` (a server or worker started in its own
    session, with its children); nothing if it is gone already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def run_cli(
    args: Sequence[str], env: Mapping[str, str], *, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """``conveyor <args>`` with ``env``; the completed process (text output), whatever its exit code."""
    return subprocess.run(
        [*CONVEYOR, *args], env=dict(env), capture_output=True, text=True, timeout=timeout, **kw
    )


def create_key(
    env: Mapping[str, str],
    *,
    name: str = "tests",
    role: str | None = None,
    project: str | None = None,
    account: str | None = None,
    **options: str,
) -> str:
    """``conveyor keys create`` on the data directory/database of ``env`` (it migrates and creates
    the default account and project first); the new secret. ``options`` are further options of
    the command (``expires_days="30"`` is ``--expires-days 30``). RuntimeError with the
    command's error output when it fails."""
    args = ["keys", "create", "--name", name]
    for option, value in {"role": role, "project": project, "account": account, **options}.items():
        if value:
            args += [f"--{option.replace('_', '-')}", value]
    done = run_cli(args, env)
    if done.returncode != 0:
        raise RuntimeError(f"`conveyor {' '.join(args)}` failed ({done.returncode}):\n{done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


def http_worker(
    server_url: str,
    key: str,
    data_dir: Path,
    *,
    pipelines: Sequence[str] = (),
    concurrency: int = 1,
    name: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``conveyor worker --server URL`` in its own session, from ``data_dir`` and with nothing but
    the URL and ``key`` (no CONVEYOR_* setting of this process leaks in); its output goes to
    ``data_dir/worker.log``. Stop it with SIGTERM (exit 0) or ``kill_process_group``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({"CONVEYOR_KEY": key, "CONVEYOR_DATA_DIR": str(data_dir), **(extra_env or {})})
    args = [*CONVEYOR, "worker", "--server", server_url, "--concurrency", str(concurrency)]
    if pipelines:
        args += ["--pipelines", ",".join(pipelines)]
    if name:
        args += ["--name", name]
    with (data_dir / "worker.log").open("ab") as log_file:
        return subprocess.Popen(
            args, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )


@contextlib.contextmanager
def postgres_database(admin_url: str, prefix: str = "conveyor_test") -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL.

    ``admin_url`` is any ``postgresql[+driver]://user@host:port/db`` URL of the server: the new
    database is created through the server's ``postgres`` database and named ``<prefix>_<random>``
    so that concurrent runs never share one.
    """
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(admin_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield parsed.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ServerProcess:
    """``conveyor serve`` on 127.0.0.1 in a subprocess with its own data directory.

    ``env`` is the whole base environment (default: this process's, without ``CONVEYOR_URL``
    and ``CONVEYOR_KEY``); ``extra_env`` is laid over it, and ``CONVEYOR_DATA_DIR`` is always
    ``data_dir``. Once started, ``env`` also holds ``CONVEYOR_URL`` and ``CONVEYOR_KEY``, so
    ``run_cli(args, server.env)`` talks to this server. ``ready_path`` is ``/livez`` for a
    server that is expected not to be ready (e.g. with its broker down). ``client_timeout`` is
    the default timeout of :meth:`client`.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 2,
        env: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        key: str | None = None,
        key_name: str = "tests",
        port: int = 0,
        extra_args: Sequence[str] = (),
        log_level: str = "warning",
        ready_path: str = "/readyz",
        ready_timeout: float = 60,
        log_path: Path | None = None,
        command: Sequence[str] | None = None,
        client_timeout: float = 60,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.workers = workers
        base = dict(os.environ if env is None else env)
        base.pop("CONVEYOR_URL", None)
        base.pop("CONVEYOR_KEY", None)
        self.env: dict[str, str] = {**base, **(extra_env or {}), "CONVEYOR_DATA_DIR": str(self.data_dir)}
        self.key = key or ""
        self._key_name = key_name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)  # a repeated option wins, e.g. ["--log-level", "info"]
        self.log_level = log_level
        self.ready_path = ready_path
        self.ready_timeout = ready_timeout
        self.log_path = log_path or self.data_dir / f"server-{self.port}.log"
        self.command = list(command or CONVEYOR)
        self.client_timeout = client_timeout
        self.process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ life cycle
    @property
    def argv(self) -> list[str]:
        return [
            *self.command,
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--log-level",
            self.log_level,
            *self.extra_args,
        ]

    def start(self) -> ServerProcess:
        """Create the key (if none was given), start the server and wait until ``ready_path``
        answers 200. RuntimeError with the log's tail if it exits or is not ready in time."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.key:
            self.key = create_key(self.env, name=self._key_name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log_file:
            # Its own session: a Ctrl-C meant for the caller does not reach it, and stop() can
            # kill the whole group (server and local workers) when it must.
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready()
        self.env["CONVEYOR_URL"] = self.url
        self.env["CONVEYOR_KEY"] = self.key
        return self

    def wait_ready(self) -> None:
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited early ({self.process.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}{self.ready_path}", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server was not ready after {self.ready_timeout:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.process is not None, "start() first"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int | None:
        """Send ``sig`` (SIGTERM: a graceful stop) and wait; after ``timeout`` kill the process
        group. The exit code (negative for a signal), or None if it was never started."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the server's whole process group (its local workers too) and reap it."""
        if self.process is None:
            return
        kill_process_group(self.process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def __enter__(self) -> ServerProcess:
        return self if self.running() else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ use
    def client(self, key: str | None = None, timeout: float | None = None) -> httpx.Client:
        """An httpx client of the native API with ``key`` (default: the server's own key)."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Token {key or self.key}"},
            timeout=self.client_timeout if timeout is None else timeout,
        )

    def create_key(
        self,
        role: str = "owner",
        project: str | None = None,
        name: str = "test",
        account: str | None = None,
        **options: str,
    ) -> str:
        """Another key on this server's database (``conveyor keys create``); see :func:`create_key`."""
        return create_key(self.env, name=name, role=role, project=project, account=account, **options)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])
