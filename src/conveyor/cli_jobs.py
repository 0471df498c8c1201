"""Job commands of the CLI (submit, jobs, show, logs, cancel, retry, results, pipelines)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the job commands to the main app."""
    return None
