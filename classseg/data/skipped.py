"""Files a data command passed over: said on the console and recorded in run manifests, never silent."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("classseg.data")


def skipped_files(df: Any) -> list[dict[str, str]]:
    """The ``{"path", "reason"}`` list that :func:`classseg.data.discover` left in ``df.attrs["skipped"]``."""
    return list(getattr(df, "attrs", {}).get("skipped", []) or [])


def format_skipped(skipped: list[dict[str, str]], limit: int = 20) -> str:
    """``skipped N file(s):`` and one ``path: reason`` line each (at most ``limit``, then a count)."""
    lines = [f"skipped {len(skipped)} file(s):"]
    lines += [f"  {item['path']}: {item['reason']}" for item in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more (listed in the run's manifest.json)")
    return "\n".join(lines)


def log_skipped(df: Any, purpose: str = "not used") -> list[dict[str, str]]:
    """Warn (logger ``classseg.data``, shown on the console) about every skipped file; return the list."""
    skipped = skipped_files(df)
    if skipped:
        where = getattr(df, "attrs", {}).get("data_dir")
        log.warning("%s%s", f"{where}: " if where else "", format_skipped(skipped).replace(
            "file(s):", f"file(s), {purpose}:", 1))
    return skipped
