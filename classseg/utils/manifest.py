"""``manifest.json``: how a run folder's figures were made (fields given by the stage, time, environment)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from classseg.utils.environment import environment_info
from classseg.utils.jsonio import write_json


def write_manifest(out_dir: str | Path, **fields: Any) -> Path:
    """Write ``out_dir/manifest.json``: the given fields plus time and environment."""
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **fields,
        "environment": environment_info(),
    }
    return write_json(Path(out_dir) / "manifest.json", manifest)
