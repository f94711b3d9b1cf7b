"""Command-line entry point: `tselect <command>`; errors become one line and exit code 2."""

from __future__ import annotations

import sys

from tselect.cli import (  # noqa: F401  (importing registers the commands)
    artifacts_cmds, distance_cmd, report_cmds, score_cmd, stages, train_cmds)
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
