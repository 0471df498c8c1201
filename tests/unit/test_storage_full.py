"""Storage full: recognised in every form it arrives in, and a model cache that cannot be written
is not a failed model."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import sqlalchemy as sa

from conveyor.errors import storage_full


def test_storage_full_is_recognised_from_os_sqlite_and_sqlalchemy_errors(tmp_path: Path) -> None:
    assert storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert storage_full(OSError(errno.EFBIG, "File too large"))
    assert not storage_full(OSError(errno.EACCES, "Permission denied"))
    assert not storage_full(ValueError("no"))
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]  # what sqlite3 sets for SQLITE_FULL
    wrapped = sa.exc.OperationalError("INSERT ...", {}, full)
    assert storage_full(wrapped)
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # type: ignore[attr-defined]
    assert not storage_full(sa.exc.OperationalError("INSERT ...", {}, busy))


def test_digits_model_loads_when_its_cache_cannot_be_written(tmp_path: Path) -> None:
    """A full disk (here: a file-size limit of 1 KiB) used to fail every digits item with
    "pipeline failed to load" and leave a half-written pickle behind."""
    script = textwrap.dedent(
        f"""
        import resource
        from pathlib import Path
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
        from conveyor.pipelines.digits import DigitsPipeline
        pipeline = DigitsPipeline(Path({str(tmp_path)!r}))
        pipeline.load()
        print("classes", len(pipeline.model.classes_))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "classes 10" in done.stdout
    assert "could not cache the digits model" in done.stderr
    assert list((tmp_path / "models").iterdir()) == []  # no partial file left behind


def test_the_api_says_507_for_a_full_disk_and_503_for_a_lost_database_connection() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from conveyor.api.errors import install

    app = FastAPI()
    install(app)

    @app.get("/api/v2/full")
    def full() -> None:
        full = sqlite3.OperationalError("database or disk is full")
        full.sqlite_errorcode = 13  # type: ignore[attr-defined]
        raise sa.exc.OperationalError("INSERT ...", {}, full)

    @app.get("/api/v2/enospc")
    def enospc() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    @app.get("/api/v2/lost")
    def lost() -> None:
        raise sa.exc.OperationalError(
            "SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True
        )

    @app.get("/api/v2/other")
    def other() -> None:
        raise OSError(errno.EACCES, "Permission denied")

    with TestClient(app, raise_server_exceptions=False) as client:
        for path in ("/api/v2/full", "/api/v2/enospc"):
            answer = client.get(path)
            assert answer.status_code == 507, answer.text
            assert answer.json()["error"] == "insufficient_storage"
        answer = client.get("/api/v2/lost")
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "database_unavailable"
        assert client.get("/api/v2/other").status_code == 500  # anything else stays a server error
