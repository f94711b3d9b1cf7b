"""Run several tselect commands in ONE fresh process: `python -m tests.reliability.multi CMDS.json`.

CMDS.json is a list of argv lists (placeholders "{0}", "{1}", ... are replaced by the ids printed
by earlier commands). Each command goes through the real Typer app (parsing, config building,
stage run); the printed ids come back as a JSON list on the last stdout line. Used where many
cheap commands would otherwise each pay the interpreter and library start-up.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def main(path: str) -> None:
    import tselect.cli  # noqa: F401  (registers the commands)
    from tselect.cli.app import app

    ids: list[str] = []
    for argv in json.loads(open(path).read()):
        argv = [a.format(*ids) if "{" in a else a for a in argv]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            app(args=argv, standalone_mode=False)
        ids.append(out.getvalue().strip().splitlines()[-1])
    print(json.dumps(ids))


if __name__ == "__main__":
    main(sys.argv[1])
