"""``bench/report.py`` renders a report with every section from a real (tiny) benchmark run.

One real benchmark runs (``noop_throughput.py`` over 300 items: a server with one worker, a job,
the plain loop), its figures go through ``run_all``'s collection into a report, and the renderer
must produce the Markdown with every section (the unrun ones saying so), the figures of the one
that ran next to its target, baseline, machine and date, and a real PNG plot.
"""

from __future__ import annotations

import importlib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def section(markdown: str, title: str) -> str:
    start = markdown.index(f"## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None]


def test_report_renders_every_section_from_a_real_tiny_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.syspath_prepend(str(BENCH))
    run_all = importlib.import_module("run_all")
    report = importlib.import_module("report")
    common = importlib.import_module("common")

    started = datetime.now(UTC)
    machine = common.machine_info()
    figures = run_all.run_one("noop_throughput", ["--items", "300", "--workers", "1"], timeout=120)
    assert "error" not in figures, figures
    assert figures["conveyor"]["completed"] == 300
    built = run_all.make_report({"noop_throughput": figures}, started, machine, quick=True)

    markdown = report.render(built, tmp_path).read_text()

    titles = [title for title, _ in report.SECTIONS.values()]
    for title in titles:
        assert f"## {title}\n" in markdown
    assert markdown.count("*Not run in this report.*") == len(titles) - 1
    noop = section(markdown, report.SECTIONS["noop_throughput"][0])
    assert f"{machine['nproc']} cores" in noop
    assert built["started_at"] in noop
    assert f"{figures['conveyor']['end_to_end_items_per_second']:,} items/s end to end" in noop
    assert f"{figures['plain_loop']['items_per_second']:,} items/s" in noop  # the baseline, same run
    met = figures["meets_target"]
    assert re.search(r"\*\*Target:\*\* ≥ 20,000 items/s end to end — \*\*(not )?met\*\*", noop)
    assert ("**not met**" in noop) is (not met)
    assert "![" in noop
    png = tmp_path / "benchmarks" / "noop_throughput.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Quick run" in markdown
