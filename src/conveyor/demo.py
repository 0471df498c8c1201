"""``conveyor demo``: the whole product in one command, on real data.

It starts ``conveyor serve`` in a subprocess (as a user would), creates an API key with
``conveyor keys create``, submits the ``digits`` pipeline over held-out images the model was
not trained on, follows the job over HTTP with the CLI's progress bar, scores the results
against the known labels, and stops the server with SIGTERM, checking that it exits cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from conveyor.cli_jobs import err, fmt_ms, items_per_second, out, print_summary, watch
from conveyor.client import ConveyorClient, ConveyorClientError, bytes_input

MIN_ACCURACY = 0.9
READY_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 60
CONVEYOR = [sys.executable, "-m", "conveyor"]


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


class DemoServer:
    """``conveyor serve`` in its own session, with its output in a log file."""

    def __init__(self, data_dir: Path, port: int, workers: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.workers = workers
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = data_dir / "demo-server.log"
        self.env = {**os.environ, "CONVEYOR_DATA_DIR": str(data_dir)}
        self.process: subprocess.Popen[bytes] | None = None

    def create_key(self) -> str:
        done = subprocess.run(
            [*CONVEYOR, "keys", "create", "--name", "demo"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"`conveyor keys create` failed:\n{done.stderr.strip()}")
        return done.stdout.strip().splitlines()[-1]

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    *CONVEYOR,
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                    "--log-level",
                    "warning",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which then stops the server itself
            )

    def wait_ready(self, client: ConveyorClient) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            if client.ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the server was not ready after {READY_TIMEOUT_SECONDS} s:\n{self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM, then wait for a clean exit. Returns the exit code (None if it had to be killed)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
                return None
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def with_demo_server(
    what: str,
    run: Callable[[ConveyorClient], bool],
    *,
    data_dir: Path,
    port: int,
    workers: int,
    env: dict[str, str] | None = None,
) -> int:
    """Start a demo server, give ``run`` a client of it, stop the server; the exit code (0 only if
    ``run`` succeeded and the server stopped cleanly)."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = DemoServer(data_dir, port or free_port(), workers)
    server.env.update(env or {})
    err.print(f"Conveyor {what}: data in {data_dir}, server log in {server.log_path}")
    succeeded = False
    try:
        key = server.create_key()
        server.start()
        with ConveyorClient(server.url, key) as client:
            server.wait_ready(client)
            err.print(f"Server ready at {server.url} with {workers} worker(s).")
            succeeded = run(client)
    except (ConveyorClientError, RuntimeError, subprocess.SubprocessError) as exc:
        err.print(f"[red]Demo failed:[/] {escape(str(exc))}")
    finally:
        code = server.stop()
    return outcome(succeeded, code, what[:1].upper() + what[1:])


def outcome(succeeded: bool, stop_code: int | None, what: str) -> int:
    """Say how the server stopped; the demo's exit code (it needs success and a clean stop)."""
    if stop_code == 0:
        err.print("Server stopped cleanly (SIGTERM, exit code 0).")
    else:
        err.print(f"[red]The server did not stop cleanly[/] (exit code {stop_code}).")
        succeeded = False
    if not succeeded:
        err.print(f"[red]{what} did not succeed.[/]")
    return 0 if succeeded else 1


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
