"""Command defaults come from the config dataclasses: parsing only the required options gives the
dataclass's defaults (issue 19)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from classseg.cli import build_parser
from classseg.commands.options import ConfigDefault, default_of, given_options


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_default_of_reads_dataclass_fields_and_function_parameters() -> None:
    @dataclass
    class Config:
        a: int = 3
        b: list = field(default_factory=lambda: [1])
        c: str = "x"

    def f(x: int, y: float = 0.5) -> None: ...

    assert default_of(Config, "a") == 3 and default_of(Config, "b") == [1] and default_of(f, "y") == 0.5
    with pytest.raises(KeyError):
        default_of(Config, "z")
    with pytest.raises(KeyError):
        default_of(f, "x")
    lazy = ConfigDefault("classseg.training.gate:GateConfig", "img_size")
    assert str(lazy) == "128" and given_options(argparse.Namespace(img_size=lazy, lr=None, seed=3),
                                                ("img_size", "lr", "seed")) == {"seed": 3}


def test_train_commands_without_options_give_the_config_defaults() -> None:
    from classseg.commands import train_classifiers, train_gate, train_joint, train_segmenter
    from classseg.training.classifiers import ClassifierConfig
    from classseg.training.gate import GateConfig
    from classseg.training.joint import JointConfig
    from classseg.training.segmenter import SegmenterConfig

    assert train_classifiers.config_from_args(_parse("train-classifiers")) == ClassifierConfig()
    assert train_segmenter.config_from_args(_parse("train-segmenter")) == SegmenterConfig()
    assert train_gate.config_from_args(_parse("train-gate")) == GateConfig()
    assert train_joint.config_from_args(_parse("train-joint")) == JointConfig()


def test_predict_and_run_all_defaults_are_their_configs() -> None:
    from pathlib import Path

    from classseg.pipeline.cli import config_from_args
    from classseg.pipeline.folder import FolderPredictionConfig
    from classseg.workflows.runall import RunAllProfile

    assert config_from_args(_parse("predict", "--test-dir", "T")) == FolderPredictionConfig(test_dir=Path("T"))
    assert _parse("run-all").profile == RunAllProfile().name
