"""The default of a config dataclass field (or a function parameter), so a command-line option's default is
written once, in the dataclass (issue 19). Used by :mod:`classseg.commands.options` and
:mod:`classseg.pipeline.cli`."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

__all__ = ["default_of"]


def default_of(config: Any, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``config`` (its factory called), or of parameter
    ``name`` of the function ``config``; KeyError when it has none."""
    if dataclasses.is_dataclass(config):
        for f in dataclasses.fields(config):
            if f.name == name:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
                break
        raise KeyError(f"{getattr(config, '__name__', config)}.{name} has no default")
    default = inspect.signature(config).parameters[name].default
    if default is inspect.Parameter.empty:
        raise KeyError(f"{config.__name__}({name}) has no default")
    return default
