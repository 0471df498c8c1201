"""``conveyor demo-ml`` (what ``make demo-ml`` runs): real photos in, labels and files out, exit 0."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("torch", reason="the conveyor[ml] extra is not installed")


def test_demo_ml_labels_the_bundled_photos_and_saves_samples(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_KEY")}
    env["CONVEYOR_DATA_DIR"] = str(tmp_path / "demo-data")
    env["COLUMNS"] = "200"  # one table row per photo
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "demo-ml", "--workers", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "6 total, 6 completed" in done.stdout
    for photo, label in (("chelsea.png", "Egyptian cat"), ("coffee.png", "espresso")):
        (row,) = [line for line in done.stdout.splitlines() if line.strip().startswith(photo)]
        assert label in row and "yes" in row
    assert "Model load time:" in done.stdout and "/sample" in done.stdout
    assert "Server stopped cleanly" in done.stderr
    folder = tmp_path / "demo-data" / "demo-ml" / "job-1"
    with Image.open(io.BytesIO((folder / "chelsea.sample.jpg").read_bytes())) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == 128
    with Image.open(folder / "coffee.saliency.png") as heat:
        assert heat.format == "PNG" and heat.size == (224, 224)
    assert len(list(folder.glob("*.saliency.png"))) == 6
