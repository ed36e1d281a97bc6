"""The ``raydd`` command.

Errors a user can fix (bad data, unknown names, a run directory in the wrong state) print one line and
exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

from raydd.cli.common import app
from raydd.cli import core, pipeline, analysis  # noqa: E402,F401,I001 - importing registers the commands (in help order)


def main() -> None:
    app(prog_name="raydd")


__all__ = ["app", "main"]

if __name__ == "__main__":
    sys.exit(main())
