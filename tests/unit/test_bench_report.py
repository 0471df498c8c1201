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


def test_splice_replaces_the_sections_a_partial_run_measured_and_keeps_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``report.py --splice``: a ``run_all --only`` run's sections go into the published page in
    place of their earlier versions; every other section and summary row stays byte for byte."""
    pytest.importorskip("matplotlib")
    monkeypatch.syspath_prepend(str(BENCH))
    run_all = importlib.import_module("run_all")
    report = importlib.import_module("report")
    common = importlib.import_module("common")
    machine = common.machine_info()

    def run(items: int) -> dict[str, object]:
        figures = run_all.run_one("noop_throughput", ["--items", str(items), "--workers", "1"], timeout=120)
        assert "error" not in figures, figures
        return figures

    earlier, later = run(200), run(300)
    published = report.render(
        run_all.make_report({"noop_throughput": earlier}, datetime.now(UTC), machine, quick=False), tmp_path
    ).read_text()
    title = report.SECTIONS["noop_throughput"][0]
    others = [t for t, _ in report.SECTIONS.values() if t != title]

    partial = run_all.make_report({"noop_throughput": later}, datetime.now(UTC), machine, quick=False)
    spliced = report.splice(partial, tmp_path).read_text()

    assert spliced.count(f"## {title}\n") == 1
    assert partial["started_at"] in section(spliced, title)
    assert "--items 300" in section(spliced, title) and "--items 200" not in spliced
    for other in others:
        assert section(spliced, other) == section(published, other)
    rows = [line for line in spliced.splitlines() if line.startswith(f"| {title} |")]
    assert len(rows) == 1 and rows[0] != next(
        line for line in published.splitlines() if line.startswith(f"| {title} |")
    )
    assert spliced.split("\n| benchmark |")[0] == published.split("\n| benchmark |")[0]
