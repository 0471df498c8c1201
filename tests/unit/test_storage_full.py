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
