"""Command-line entry point: `tselect <command>`; errors become one line and exit code 2."""

from __future__ import annotations

import sys

from tselect.cli import artifacts_cmds, report_cmds, stages, train_cmds  # noqa: F401  (registers commands)
from tselect.cli.app import app
from tselect.errors import UserError


def main() -> None:
    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
