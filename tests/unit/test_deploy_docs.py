"""The deployment files and the settings docs name only things that exist.

Compose cannot run here (no images offline), so this checks what can drift silently: every
``conveyor`` command in ``deploy/docker-compose.yml`` is a real subcommand with real options, and
every ``CONVEYOR_*`` variable named in the compose file, the deployment guide and the README's
settings table is a setting Conveyor reads.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from conveyor.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
# Read by the CLI or the logging setup rather than by Settings.
OTHER_VARIABLES = {"CONVEYOR_URL", "CONVEYOR_KEY", "CONVEYOR_LOG_LEVEL", "CONVEYOR_LOG_FORMAT"}
# Read by the test suite only.
TEST_VARIABLES = {"CONVEYOR_CHROMIUM", "CONVEYOR_SCREENSHOTS_DIR"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_every_compose_command_is_a_real_cli_command_with_real_options() -> None:
    commands = [
        s["command"] for s in compose()["services"].values() if s.get("command", [""])[0] == "conveyor"
    ]
    assert len(commands) == 3  # migrate, api, worker
    for command in commands:
        subcommand = [part for part in command[1:] if not part.startswith("-")][:2]
        if subcommand[0] not in ("db",):
            subcommand = subcommand[:1]
        shown = subprocess.run(
            [sys.executable, "-m", "conveyor", *subcommand, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        for option in (part for part in command if part.startswith("--")):
            assert option in shown.stdout, f"{' '.join(command)}: {option} is not an option"


def test_every_documented_variable_is_a_setting() -> None:
    known = {f"CONVEYOR_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    texts = [
        COMPOSE.read_text(),
        (ROOT / "deploy" / "README.md").read_text(),
        (ROOT / "README.md").read_text(),
    ]
    named = {match for text in texts for match in re.findall(r"CONVEYOR_[A-Z_]+[A-Z]", text)}
    named = {name for name in named if not name.startswith("CONVEYOR_TEST_")} - TEST_VARIABLES
    assert named, "no variables found: the pattern is broken"
    assert named - known == set()
    assert {"CONVEYOR_DATABASE_URL", "CONVEYOR_BROKER_URL"} <= set(compose()["x-conveyor-env"])


def test_every_setting_is_in_the_readme_table() -> None:
    table = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`CONVEYOR_{name.upper()}`" not in table]
    assert missing == []
