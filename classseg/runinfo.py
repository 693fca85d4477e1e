"""Run bookkeeping, by job: :mod:`classseg.seeding` (``set_seed``), :mod:`classseg.environment`
(``environment_info``), :mod:`classseg.jsonio` (``write_json`` / ``read_json``) and :mod:`classseg.manifest`
(``write_manifest``). This module only re-exports them for code written before the split.
"""

from classseg.environment import environment_info
from classseg.jsonio import read_json, write_json
from classseg.manifest import write_manifest
from classseg.seeding import set_seed

__all__ = ["environment_info", "read_json", "set_seed", "write_json", "write_manifest"]
