"""The ``classseg`` command line: a thin argparse front; each subcommand lives in classseg/commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: Subcommand modules in classseg/commands/, each with add_parser(subparsers) and run(args).
COMMANDS = (
    "data",
    "train_classifiers",
    "train_segmenter",
    "train_gate",
    "train_joint",
    "ensemble",
    "predict",
    "evaluate",
    "view",
    "compare",
    "report",
    "export",
    "run_all",
)


#: Commands whose ``--out`` is a folder they write for a long time: locked while they run
#: (:class:`classseg.utils.atomic.OutputLock`), so a second command into the same folder is refused in one line.
#: (The pipeline and ``evaluate`` lock their own ``--out``; ``data split`` and ``export`` write one file atomically.)
LOCKED_COMMANDS = ("train-classifiers", "train-segmenter", "train-gate", "train-joint", "ensemble", "run-all",
                   "compare", "report")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    from classseg import __version__

    parser = argparse.ArgumentParser(prog="classseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"classseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"classseg.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"classseg.commands.{name}":
                continue  # not part of this build
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``classseg`` and ``python -m classseg``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prog = " ".join(["classseg", args.command, *([args.data_command] if getattr(args, "data_command", None) else [])])
    if getattr(args, "allow_missing", False):  # --allow-missing reaches every split the command applies
        from classseg.data.splits import missing_patients_allowed

        with missing_patients_allowed():
            return _dispatch(args, prog)
    return _dispatch(args, prog)


def _dispatch(args: argparse.Namespace, prog: str) -> int:
    """Run the parsed command: its output lock where it takes one, Ctrl-C and ``OSError`` as one line."""
    try:
        out = getattr(args, "out", None)
        if args.command in LOCKED_COMMANDS and out:
            from classseg.utils.atomic import OutputLock, OutputLockError

            try:
                lock = OutputLock(out, prog)
                lock.acquire()
            except OutputLockError as err:
                print(f"{prog}: {err}", file=sys.stderr)
                return 1
            try:
                return int(args.func(args) or 0)
            finally:
                lock.release()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (Ctrl-C); files already written are complete (each is written atomically)",
              file=sys.stderr)
        return 130
    except OSError as err:  # an unwritable output, a folder given as a file, a full disk: one line
        from classseg.utils.guards import os_error_message

        print(f"{prog}: {os_error_message(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
