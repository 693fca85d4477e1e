"""Command-line options shared by the ``classseg`` commands, with their defaults taken from the config
dataclasses (:class:`~classseg.training.classifiers.ClassifierConfig`, ``SegmenterConfig``, ``GateConfig``,
``JointConfig``, :class:`~classseg.workflows.runall.RunAllProfile`,
:class:`~classseg.pipeline.folder.FolderPredictionConfig`), so a default is written once.

No TensorFlow import here: ``classseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from classseg.utils.defaults import default_of

__all__ = ["ConfigDefault", "add_data_dir", "add_run_options", "check_run_inputs", "command_parser", "default_of",
           "given_options"]


class ConfigDefault:
    """An option's default that is a field of a config dataclass in a module imported only when the default
    is shown (``--help``): ``ClassifierConfig``'s module imports TensorFlow, which ``classseg --help`` must
    not. Left in the parsed namespace when the option is not given (:func:`given_options` drops it, so the
    dataclass fills it in)."""

    def __init__(self, config: str, name: str) -> None:
        self.config, self.name = config, name  # config: "package.module:ClassName"

    def value(self) -> Any:
        """The field's default (imports the config's module)."""
        import importlib

        module, _, cls = self.config.partition(":")
        return default_of(getattr(importlib.import_module(module), cls), self.name)

    def __str__(self) -> str:
        return str(self.value())


def given_options(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """``names`` of ``args`` that were given (None and :class:`ConfigDefault` values left out)."""
    return {name: getattr(args, name) for name in names
            if getattr(args, name, None) is not None and not isinstance(getattr(args, name), ConfigDefault)}


def command_parser(subparsers: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int],
                   text: tuple[str, str]) -> argparse.ArgumentParser:
    """Register the subcommand ``name`` (``text`` = its one-line help and its description) run by ``run``."""
    parser = subparsers.add_parser(name, help=text[0], description=text[1])
    parser.set_defaults(func=run)
    return parser


def add_data_dir(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """The optional ``DATA_DIR`` positional: a kaggle_3m-style folder (default: the bundled sample)."""
    from classseg.data import DEFAULT_DATA_DIR

    parser.add_argument("data_dir", nargs="?", default=str(DEFAULT_DATA_DIR), metavar="DATA_DIR",
                        help=help or "kaggle_3m-style folder (default: %(default)s)")


def add_run_options(parser: argparse.ArgumentParser, out: str, seed: int, strategy: str | None = None,
                    quiet: str | None = None) -> None:
    """The options of a training command's run: ``--splits`` (with ``--allow-missing``), ``--seed`` (default
    ``seed``, the config's), ``--out`` (default ``out``), ``--overwrite``, ``--strategy`` (with its help text;
    left out when None) and ``--quiet``."""
    parser.add_argument("--splits", default=None, metavar="FILE",
                        help="patient_id,split CSV (default: computed from --seed)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="go on when the split file lists patients the data lacks (refused otherwise; said "
                             "on the console)")
    parser.add_argument("--seed", type=int, default=seed,
                        help="seed of the split and the training (default %(default)s)")
    parser.add_argument("--out", default=out, metavar="DIR", help="run folder (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    if strategy is not None:
        parser.add_argument("--strategy", choices=("default", "mirrored"), default="default", help=strategy)
    parser.add_argument("--quiet", action="store_true", help=quiet or "no progress bars")


def check_run_inputs(prog: str, args: argparse.Namespace, finished: Sequence[str] | None) -> None:
    """Refuse (one line, ``prog: ...``) a missing ``--splits`` file or an ``--out`` that holds a finished run
    (one of ``finished``) without ``--overwrite`` (:func:`classseg.utils.guards.check_run_out`)."""
    from classseg.utils.guards import OutputError, check_run_out

    if getattr(args, "splits", None) and not Path(args.splits).is_file():
        raise SystemExit(f"{prog}: split file not found: {args.splits}")
    try:
        check_run_out(args.out, args.data_dir, finished, overwrite=getattr(args, "overwrite", False))
    except OutputError as err:
        raise SystemExit(f"{prog}: {err}") from None
