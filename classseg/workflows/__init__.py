"""Procedures built from the other packages: ``classseg run-all`` (``runall``: split, phase 1, phase 2,
phase 3 through :func:`classseg.pipeline.folder.predict_folder`, joint model, report) and the notebooks' shared
setup cells (``notebook``)."""
