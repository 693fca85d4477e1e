"""Saving matplotlib figures the same way everywhere (no screen needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: str | Path, dpi: int = 120, suffixes: Sequence[str] = (),
                tight: bool = True) -> list[Path]:
    """Lay out, save and close ``fig``; returns the files written.

    ``path`` is written as given, or once per suffix in ``suffixes`` (e.g. ``(".png", ".pdf")``).
    The parent folder is created. The figure is closed so long runs do not accumulate memory.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    paths = [path.with_suffix(s) for s in suffixes] or [path]
    if tight:
        fig.tight_layout()
    from classseg.atomic import atomic_path

    for target in paths:
        with atomic_path(target) as tmp:  # the temporary name keeps the suffix, so the format is unchanged
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if suffixes else None)
    plt.close(fig)
    return paths
