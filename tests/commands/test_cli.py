"""The command line: every subcommand registered, help works without TensorFlow errors."""

from __future__ import annotations

import pytest

from classseg.cli import COMMANDS, build_parser, main


def test_every_command_is_registered() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = set(sub.choices)
    assert {"data", "train-classifiers", "train-segmenter", "train-gate", "train-joint", "predict", "compare",
            "report", "export", "run-all", "evaluate", "ensemble", "view"} <= names
    assert len(COMMANDS) == 13


@pytest.mark.parametrize("command", ["run-all", "report", "export", "compare", "train-joint", "evaluate", "ensemble"])
def test_help_exits_cleanly(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: classseg" in capsys.readouterr().out


def test_no_command_prints_help(capsys) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
