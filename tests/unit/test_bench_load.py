"""``bench/load.py`` end to end at a tiny size: a real server, a real load generator process with
every request kind (status native and Modzy, history, SSE), the probe jobs, and the report's
section rendered from its figures. No speed is asserted, only that every part measured something
and that the load was served without errors."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_load_bench_measures_every_request_kind_and_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "load.py"),
            *("--pollers", "20", "--seconds", "6", "--jobs", "4", "--idle-probes", "2"),
            *("--probe-every", "1", "--sse-session", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    kinds = figures["kinds"]
    assert set(kinds) == {"status_native", "status_modzy", "history", "sse"}
    for kind in kinds.values():
        assert kind["latency_ms"]["n"] > 0
    assert kinds["status_native"]["statuses"].get("304", 0) > 0  # it sent its ETags back
    assert "304" not in kinds["status_modzy"]["statuses"]  # modzy-sdk does not
    assert figures["counters"]["sse_connections"] > figures["clients"]["sse"]  # they reconnected
    assert figures["errors"] == 0 and figures["server_errors_5xx"] == 0, kinds
    for probe in (figures["probe_idle"], figures["probe_under_load"]):
        assert probe["jobs"] > 0 and probe["submit_to_finished_ms"]["n"] == probe["jobs"]
    assert figures["rss"]["peak"]["total_mb"] >= figures["rss"]["peak"]["server_mb"] > 0

    monkeypatch.syspath_prepend(str(BENCH))
    report = importlib.import_module("report")
    section = report.load_section(figures)
    assert section.met is figures["met"]
    assert [row[0] for row in section.table[1:5]] == [label for _, label in report.LOAD_KINDS]
    assert f"submit p99 {report.fmt(figures['submit_p99_ms'])} ms" in section.figure
