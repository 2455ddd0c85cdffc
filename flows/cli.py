"""The `rlmec` command line.

Every failure ends with one line on stderr, ``rlmec: ...``: what failed (the stage, the
file and line or field at fault) and what to do. Config, data files and the workspace are
checked before Prefect starts; no traceback is printed unless ``--debug`` asks for it.

The arguments are in ``cli_parser``, what each command does in ``cli_commands``, the last
line of a failure in ``cli_errors`` and the console's filter in ``cli_console``.
"""

from __future__ import annotations

import os
import sys
import traceback

from flows.cli_commands import COMMANDS
from flows.cli_errors import failure_line
from flows.cli_parser import build_parser
from flows.environment import plain_progress_off_terminal


def main(argv: list[str] | None = None) -> int:
    plain_progress_off_terminal()
    args = build_parser().parse_args(argv)
    args.started = False  # set once a flow (and its run record) starts
    if args.debug:
        os.environ["RLMEC_DEBUG"] = "1"  # the Prefect server's own output too
    try:
        return COMMANDS[args.command](args)
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            traceback.print_exception(exc)
        line, code = failure_line(exc, getattr(args, "workspace", None), args.started)
        print(f"\n{line}" if args.started else line, file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
