"""Command-line entry point: `tselect <command>`; errors become one line and exit code 2."""

from __future__ import annotations

import errno
import sys

INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def _interrupted() -> None:
    """One line and exit 130, skipping interpreter shutdown: a KeyboardInterrupt re-raised there
    (zarr's I/O thread, half-run imports) would otherwise end the process by SIGINT instead."""
    import os

    try:
        print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(INTERRUPTED)


try:  # Ctrl-C while the CLI starts up is an interrupt like any other, not a traceback
    from tselect.cli import (  # noqa: F401  (importing registers the commands)
        artifacts_cmds, distance_cmd, report_cmds, score_cmd, stages, train_cmds)
    from tselect.cli.app import app
    from tselect.errors import UserError
except KeyboardInterrupt:
    _interrupted()


def main() -> None:
    import signal

    try:
        _main()
    except KeyboardInterrupt:  # anywhere outside the command itself (parsing, error printing)
        _interrupted()
    finally:
        # The command is over (its output and exit status are settled): a Ctrl-C now would only
        # turn a finished run into a death by SIGINT during interpreter shutdown.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _main() -> None:
    try:  # typer ≥0.22 vendors click; older typer uses click itself
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    from typer import Abort, Exit

    try:
        code = app(standalone_mode=False)
    except Exit as e:  # --help, --version and friends
        sys.exit(e.exit_code)
    except exceptions.NoArgsIsHelpError as e:
        e.show()
        sys.exit(2)
    except exceptions.UsageError as e:  # unknown option, missing value, bad type: one line, not a box
        command = e.ctx.command_path if e.ctx else "tselect"
        print(f"error: {e.format_message().rstrip('.')}; see `{command} --help`", file=sys.stderr)
        sys.exit(2)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        print(f"error: {e.strerror} writing {e.filename or 'the store'}; free space or pass --store on a writable "
              "disk, then rerun (finished chunks are kept)", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, Abort):
        _interrupted()
    # Typer turns Ctrl-C inside a command into `Exit(130)` and, without standalone mode, hands the
    # code back as the return value; commands themselves return None.
    if code == INTERRUPTED:
        _interrupted()
    if isinstance(code, int) and not isinstance(code, bool) and code:
        sys.exit(code)
