"""``conveyor demo``: the whole product in one command, on real data.

It starts ``conveyor serve`` in a subprocess (as a user would, through
:func:`conveyor.demo.with_demo_server`), submits the ``digits`` pipeline over held-out images the
model was not trained on, follows the job over HTTP with the CLI's progress bar, scores the
results against the known labels, and stops the server with SIGTERM, checking that it exits
cleanly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from conveyor.cli.common import err, fmt_ms, items_per_second, out
from conveyor.cli.progress import print_summary, watch
from conveyor.client import ConveyorClient, bytes_input
from conveyor.demo import DataDirOpt, PortOpt, WorkersOpt, with_demo_server

MIN_ACCURACY = 0.9


@dataclass
class Score:
    """How the job's predictions compare with the true labels."""

    total: int
    correct: int = 0
    per_class: dict[int, Counter[str]] = field(default_factory=dict)
    confusions: Counter[tuple[int, int]] = field(default_factory=Counter)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def score(rows: list[dict[str, Any]], labels: dict[str, int]) -> Score:
    """Items that failed or never ran count as wrong."""
    result = Score(total=len(labels))
    for label in sorted(set(labels.values())):
        result.per_class[label] = Counter(items=0, correct=0, predicted=0)
    for label in labels.values():
        result.per_class[label]["items"] += 1
    for row in rows:
        truth = labels.get(row["name"])
        if truth is None or row["status"] != "SUCCESS" or not row["result"]:
            continue
        predicted = int(row["result"]["label"])
        if predicted in result.per_class:
            result.per_class[predicted]["predicted"] += 1
        if predicted == truth:
            result.correct += 1
            result.per_class[truth]["correct"] += 1
        else:
            result.confusions[(truth, predicted)] += 1
    return result


def demo(
    count: Annotated[
        int | None, typer.Option(help="How many held-out digit images to submit (default: all of them).")
    ] = None,
    workers: WorkersOpt = 2,
    port: PortOpt = 0,
    data_dir: DataDirOpt = Path("conveyor-data"),
) -> None:
    """End-to-end demo: start a server, classify held-out handwritten digits, report accuracy.

    Starts `conveyor serve` on a free port, creates a key, submits a `digits` job over images
    the model never saw, follows it with a progress bar, prints accuracy, per-class counts and
    timings, then stops the server with SIGTERM. Exits 0 only if the job succeeded with an
    accuracy of at least 90% and the server stopped cleanly.
    """
    raise typer.Exit(run_demo(count=count, workers=workers, port=port, data_dir=data_dir))


def run_demo(*, count: int | None, workers: int, port: int, data_dir: Path) -> int:
    """Run the demo; returns the process exit code (0: success with accuracy >= 90%)."""
    from conveyor.pipelines.digits import holdout_pngs

    def classify(client: ConveyorClient) -> bool:
        images = holdout_pngs(limit=count)
        if count is not None and count > len(images):
            err.print(f"[yellow]Only {len(images)} held-out images exist; submitting all of them.[/]")
        labels = {name: label for name, _, label in images}
        job = client.submit(
            "digits",
            [bytes_input(png, name) for name, png, _ in images],
            name=f"demo: {len(images)} held-out handwritten digits",
        )
        err.print(f"Submitted job {job['id']}: {job['total']} PNG images to the `digits` pipeline.")
        final = watch(client, job)
        result = score(client.results(final["id"]), labels)
        report(final, result)
        return final["status"] == "SUCCESS" and result.accuracy >= MIN_ACCURACY

    return with_demo_server("demo", classify, data_dir=data_dir, port=port, workers=workers)


def report(job: dict[str, Any], result: Score) -> None:
    print_summary(job)
    table = Table(box=None, header_style="bold", title="per class", title_justify="left")
    for column in ("Digit", "Items", "Correct", "Accuracy", "Predicted as"):
        table.add_column(column, justify="right")
    for label, counts in result.per_class.items():
        accuracy = counts["correct"] / counts["items"] if counts["items"] else 0.0
        table.add_row(
            str(label),
            str(counts["items"]),
            str(counts["correct"]),
            f"{accuracy:.1%}",
            str(counts["predicted"]),
        )
    out.print(table)
    if result.confusions:
        worst = ", ".join(f"{t} read as {p} ({n}x)" for (t, p), n in result.confusions.most_common(3))
        out.print(f"Most frequent mistakes: {worst}")
    rate = items_per_second(job)
    throughput = f"{rate:,.1f} items/s" if rate is not None else "-"
    queue, elapsed = fmt_ms(job.get("queue_time_ms")), fmt_ms(job.get("elapsed_time_ms"))
    out.print(f"Throughput: {throughput} | queue time {queue} | elapsed time {elapsed}")
    verdict = "green" if result.accuracy >= MIN_ACCURACY else "red"
    out.print(
        f"[bold {verdict}]Accuracy: {result.accuracy:.2%}[/] ({result.correct} of {result.total} correct; "
        f"pass mark {MIN_ACCURACY:.0%})"
    )
