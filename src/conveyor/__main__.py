"""The ``conveyor`` command: the console script (``conveyor = "conveyor.__main__:main"``) and
``python -m conveyor``.

The one module that imports both the CLI and the demos: the layers run ``cli < demo``, so
:mod:`conveyor.cli` never imports :mod:`conveyor.demo`; the demo commands join the CLI's app here,
after all of its own commands (``conveyor --help`` lists them in that order).
"""

from __future__ import annotations

from conveyor.cli import app
from conveyor.demo import digits, photos

app.command("demo")(digits.demo)
app.command("demo-ml")(photos.demo_ml)


def main() -> None:
    app(prog_name="conveyor")


if __name__ == "__main__":
    main()
