"""The core must import, list its pipelines and serve without the ``conveyor[ml]`` extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Runs in a fresh interpreter where importing the ML packages fails, as on a core-only install.
SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = {"torch", "sentence_transformers", "efficientnet_lite_pytorch", "transformers"}

    class NoML(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoML())
    from conveyor.api.app import create_app
    from conveyor.pipelines import registry
    from conveyor.settings import Settings

    create_app(Settings(data_dir=sys.argv[1]), workers=0, run_sweeper=False)
    print(",".join(registry.available()))
    print(any(name.split(".")[0] in BLOCKED for name in sys.modules))
    """
)


def test_core_imports_and_lists_pipelines_without_torch(tmp_path: object) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    available, imported_ml = done.stdout.split()
    assert available.split(",") == ["digits", "test-delay"]
    assert imported_ml == "False"
    assert "imagenet-classifier needs torch" in done.stderr  # the reason is logged, not swallowed
