"""Helpers every layer may use, each with one job: atomic writes and output-folder locks (``atomic``),
JSON files (``jsonio``), the data and model folders (``paths``), seeds (``seeding``), the machine a run used
(``environment``), CPU cores and ONNX sessions (``runtime``), run manifests (``manifest``) and the checks made
before any work (``guards``: outputs that would overwrite results, leakage between a starting model's split and
a new one). Nothing is imported here, so importing one helper never loads the others."""
