"""What every ``fabricsim`` subcommand shares: running a parsed command with the CLI's error
contract, and formatting times. Below every subcommand module in the import graph (it imports
none of them), so that ``fabricsim.cli`` can import the subcommands and they can import this.

The contract (:func:`run_command`): a user error prints one line, ``fabricsim: error: <field>:
<what is allowed>``, and exits 2; warnings print as ``fabricsim: warning: <message>``; Ctrl-C
prints ``fabricsim: interrupted`` and exits 130; a reader that goes away (``fabricsim ... |
head``) ends the command quietly with status 141, as a program killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import sys

from fabricsim.errors import FabricsimError

__all__ = ["ArgumentParser", "format_time", "run_command", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_BROKEN_PIPE"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a program stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors: a bad option or value (``--alpha x``, an unknown
    choice) prints ``fabricsim: error: <what>`` and a pointer to ``--help``, and exits 2.
    Subcommand parsers are of the same class."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"fabricsim: error: {message} (see '{self.prog} --help')\n")


def format_time(ps) -> str:
    """A time in picoseconds in a readable unit ("n/a" for None, negative or NaN)."""
    if ps is None or not ps >= 0:
        return "n/a"
    s = ps * 1e-12
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale:
            return f"{s / scale:.3f} {unit}"
    return f"{ps:.0f} ps"


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
        pass


def run_command(args) -> int:
    """Run a parsed command (``args.func(args)``) under the CLI's error contract; returns the exit
    status."""
    import warnings

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"fabricsim: warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except FabricsimError as exc:
        print(f"fabricsim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. --out names a file, or a directory that cannot be written
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"fabricsim: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fabricsim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
