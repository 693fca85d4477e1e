"""The four notebooks: generated from build_notebooks.py, cleared, and executed end to end with tiny settings.

Execution follows papermill: a cell with small parameters is inserted right after the cell tagged
``parameters`` (WEIGHTS="none", 64 px, 1 epoch, MobileNetV2 + "gap" head, a 3-patient copy of the bundled
sample, INSTALL=False); the notebooks run in python3 kernels of this interpreter (nbclient), two at a time.
Any cell error fails that notebook's test. Executed copies go to tmp_path; the committed notebooks are never
written. Set CLASSSEG_SKIP_NOTEBOOKS=1 to skip the (few-minute) executions locally.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell

from classseg.data import DEFAULT_DATA_DIR, discover

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = ROOT / "notebooks"
#: Three real patients of the bundled sample; PER_CLASS tumor + PER_CLASS tumor-free slices of each are copied.
SUBSET = ("TCGA_CS_6665_20010817", "TCGA_HT_7694_19950404", "TCGA_HT_7860_19960513")
#: 12 slices per patient: whatever the split, each training set fits one batch of 16, so Keras traces each
#: train / test step once (a second, partial batch shape would trace the ResNet-50 joint model again).
PER_CLASS = 6
KERNEL = "classseg-test-python3"
TINY = {"WEIGHTS": "none", "IMG_SIZE": 64, "EPOCHS": 1, "BACKBONES": "mobilenetv2", "HEAD": "gap"}


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _builder()


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)


def _parameters_index(nb: nbformat.NotebookNode) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    return tagged[0]


def _defaults(nb: nbformat.NotebookNode) -> dict:
    """The parameters cell's assignments, evaluated as literals."""
    tree = ast.parse(nb.cells[_parameters_index(nb)].source)
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)}


# ------------------------------------------------------------------------------------------ static checks
def test_committed_notebooks_match_their_source():
    assert BUILD.main(["--check"]) == 0, "run: python notebooks/build_notebooks.py"


@pytest.mark.parametrize("name", BUILD.NOTEBOOKS)
def test_notebook_is_cleared_and_complete(name):
    from IPython.core.inputtransformer2 import TransformerManager

    nb = _read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if name in BUILD.EXECUTED:  # committed executed on the bundled sample: its figures and tables are visible
        kinds = {key for c in code for o in c.outputs for key in o.get("data", {})}
        assert {"image/png", "text/markdown", "text/html"} <= kinds, kinds
        assert not any(o.output_type == "error" for c in code for o in c.outputs)
    else:
        assert all(c.outputs == [] and c.execution_count is None for c in code), "outputs must not be committed"
    size = (NOTEBOOKS_DIR / f"{name}.ipynb").stat().st_size
    assert size <= BUILD.MAX_BYTES, f"{name}.ipynb is {size} bytes (limit {BUILD.MAX_BYTES}; images are shrunk)"
    assert nb.cells[0].cell_type == "markdown" and "seed 00" in nb.cells[0].source
    assert "How results are labelled" in nb.cells[0].source
    params = _defaults(nb)
    for key in ("INSTALL", "SOURCE", "DATA_DIR", "SPLITS", "SEED", "OUT_DIR", "IMG_SIZE", "EPOCHS"):
        assert key in params, key
    assert params["DATA_DIR"] is None and params["SPLITS"] is None and params["INSTALL"] is True
    assert params["SOURCE"] is None  # no placeholder URL: a checkout installs itself, pip users set SOURCE
    if name not in ("02_resunet_segmentation", "04_joint_vs_two_stage"):  # ResUNet arms: no pretrained weights
        assert params["WEIGHTS"] == "imagenet"
    text = "\n".join(c.source for c in code)
    assert '"pip", "install", "-q", "-e", ".."' in text and '"pip", "install", "-q", str(SOURCE)' in text
    assert "YOUR-ACCOUNT" not in text and "REPO_URL" not in text
    # classseg.workflows.notebook: Kaggle or sample
    assert "load_data(DATA_DIR)" in text and "check_accelerator()" in text
    manager = TransformerManager()
    for cell in code:  # IPython syntax (magics) included
        compile(manager.transform_cell(cell.source), f"{name}:{cell.id}", "exec")


def test_parameter_defaults_are_the_papers():
    """The notebooks' defaults are the training dataclasses' defaults (the papers' values)."""
    from classseg.training.classifiers import PAPER_BACKBONES, ClassifierConfig
    from classseg.training.joint import JointConfig
    from classseg.training.multitask import MultitaskConfig
    from classseg.training.segmenter import recipe_config

    nb1, nb2, nb4 = (_defaults(_read(n)) for n in (BUILD.NOTEBOOKS[0], BUILD.NOTEBOOKS[1], BUILD.NOTEBOOKS[3]))
    c = ClassifierConfig()
    assert tuple(nb1["BACKBONES"].split(",")) == PAPER_BACKBONES == c.backbones
    assert (nb1["WEIGHTS"], nb1["IMG_SIZE"], nb1["EPOCHS"], nb1["BATCH_SIZE"], nb1["HEAD"], nb1["REPEATS"]) == (
        c.weights, c.img_size, c.epochs, c.batch_size, c.head, c.repeats)
    s = recipe_config("paper")  # notebook 02 is seed 002's ResUNet notebook; SegmenterConfig() is the fast recipe
    assert (nb2["IMG_SIZE"], nb2["EPOCHS"], nb2["BATCH_SIZE"], nb2["LOSS"], nb2["AUGMENT"]) == (
        s.img_size, s.epochs, s.batch_size, s.loss, s.augment)
    m = MultitaskConfig()  # notebook 04 is the fair comparison of docs/multitask.md
    assert (tuple(nb4["ARMS"].split(",")), tuple(int(v) for v in nb4["SEEDS"].split(",")), nb4["IMG_SIZE"],
            nb4["WIDTH"], nb4["EPOCHS"], nb4["LR"], nb4["INIT"]) == (
        m.arms, m.seeds, m.img_size, m.width, m.epochs, m.lr, m.init)
    j = JointConfig()
    assert (j.lambda_cls, j.lambda_seg, j.schedule) == (1.0, 1.5, "fixed")  # the joint arm: seed 000's loss


# ------------------------------------------------------------------------------------------ execution
skip_slow = pytest.mark.skipif(bool(os.environ.get("CLASSSEG_SKIP_NOTEBOOKS")), reason="CLASSSEG_SKIP_NOTEBOOKS set")


def _small_data(root: Path) -> Path:
    """Evenly spaced tumor and tumor-free slices of 3 sample patients, copied (never written into data/)."""
    frame = discover(DEFAULT_DATA_DIR)
    for pid in SUBSET:
        (root / pid).mkdir(parents=True)
        rows = frame[frame["patient_id"] == pid].sort_values("slice")
        for tumor in (True, False):
            group = rows[rows["tumor"] == tumor]
            assert len(group) >= PER_CLASS
            for row in group.iloc[np.linspace(0, len(group) - 1, PER_CLASS).astype(int)].itertuples():
                for path in (Path(row.image_path), Path(row.mask_path)):
                    shutil.copy2(path, root / pid / path.name)
    assert len(discover(root)) == len(SUBSET) * 2 * PER_CLASS
    return root


def _kernelspec(jupyter: Path) -> None:
    """A kernelspec running this interpreter (found first through $JUPYTER_PATH)."""
    from ipykernel.kernelspec import write_kernel_spec

    write_kernel_spec(jupyter / "kernels" / KERNEL, overrides={"display_name": "classseg tests"})
    assert json.loads((jupyter / "kernels" / KERNEL / "kernel.json").read_text())["argv"][0] == sys.executable


def _inject(name: str, params: dict) -> nbformat.NotebookNode:
    """The committed notebook with a cell of ``params`` inserted right after its parameters cell (papermill)."""
    nb = _read(name)
    unknown = set(params) - set(_defaults(nb))
    assert not unknown, f"{name} has no parameter(s) {sorted(unknown)}"
    source = "# Injected parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(_parameters_index(nb) + 1, new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    return nb


async def _run_lanes(lanes: list[list[dict]]) -> None:
    """Run the lanes concurrently, each lane's jobs in order; fills ``job["seconds"]`` and ``job["error"]``."""
    from nbclient import NotebookClient

    async def lane(jobs: list[dict]) -> None:
        for job in jobs:
            start, job["error"] = time.perf_counter(), None
            try:
                if job.get("prepare"):
                    job["prepare"]()
                await NotebookClient(job["nb"], kernel_name=KERNEL, timeout=600,
                                     resources={"metadata": {"path": str(job["cwd"])}}).async_execute()
            except Exception as err:  # noqa: BLE001 - reported by that notebook's test
                job["error"] = err
            job["seconds"] = time.perf_counter() - start

    await asyncio.gather(*(lane(jobs) for jobs in lanes))


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[str, dict]:
    """The notebooks executed with tiny settings in two kernels at a time: 04 alone in one lane (longest),
    03 (stand-ins trained), 03 again with those models as the "shipped" ones, 02 and 01 in the other.

    Per run: ``nb`` (executed; also written to ``<tmp>/<run>.executed.ipynb``), ``out`` (its OUT_DIR),
    ``seconds``, ``error``; plus ``"data"`` (the copied 3-patient folder).
    """
    base = tmp_path_factory.mktemp("notebooks")
    data = _small_data(base / "data" / "kaggle_3m")
    _kernelspec(base / "jupyter")
    models = base / "models"  # filled with 03's stand-ins before the "shipped" run

    def ship() -> None:
        models.mkdir()
        stand_ins = base / "03_classseg_pipeline" / "out"
        gate = json.loads((stand_ins / "classifiers" / "results.json").read_text())["gate"]["model"]
        (models / "classifier.keras").symlink_to(stand_ins / "classifiers" / gate)  # relative to results.json
        (models / "segmenter.keras").symlink_to(stand_ins / "segmenter" / "segmenter.keras")

    runs = {  # run name -> (notebook, parameters, prepare)
        "04_joint_vs_two_stage": ("04_joint_vs_two_stage", {"ARMS": "seg_only,cls_only,joint", "SEEDS": "0,1",
                                                            "IMG_SIZE": 32, "EPOCHS": 1}, None),
        "03_classseg_pipeline": ("03_classseg_pipeline", {**TINY, "MODELS_DIR": str(base / "no_models")}, None),
        "03_shipped": ("03_classseg_pipeline", {"MODELS_DIR": str(models)}, ship),
        "02_resunet_segmentation": ("02_resunet_segmentation", {"IMG_SIZE": 64, "EPOCHS": 1}, None),
        "01_classification_benchmark": ("01_classification_benchmark", dict(TINY), None),
    }
    jobs = {}
    for run, (name, extra, prepare) in runs.items():
        (base / run / "cwd").mkdir(parents=True)
        nb = _inject(name, {"INSTALL": False, "DATA_DIR": str(data), "OUT_DIR": str(base / run / "out"), **extra})
        jobs[run] = {"nb": nb, "cwd": base / run / "cwd", "out": base / run / "out", "prepare": prepare}
    lanes = [[jobs["04_joint_vs_two_stage"]], [jobs[r] for r in list(runs)[1:]]]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(base / "jupyter"))
        mp.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        start = time.perf_counter()
        asyncio.run(_run_lanes(lanes))
        total = time.perf_counter() - start
    print(f"\nnotebooks executed in {total:.1f} s wall (2 kernels at a time): "
          + ", ".join(f"{run} {job['seconds']:.1f} s" for run, job in jobs.items()))
    for run, job in jobs.items():
        nbformat.write(job["nb"], base / f"{run}.executed.ipynb")  # inspectable, failures included
    return {**jobs, "data": data}


def _done(executed: dict, run: str) -> tuple[nbformat.NotebookNode, Path]:
    job = executed[run]
    if job["error"] is not None:
        pytest.fail(f"{run} failed:\n{job['error']}", pytrace=False)
    return job["nb"], job["out"]


def _outputs(nb: nbformat.NotebookNode, kind: str) -> list:
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind == "image" and "image/png" in out.get("data", {}):
                found.append(out)
            if kind == "stdout" and out.get("name") == "stdout":
                found.append(out["text"])
            if kind == "error" and out.get("output_type") == "error":
                found.append(out)
    return found


def _same_split(run_dir: Path, splits: Path) -> None:
    a = pd.read_csv(run_dir / "splits.csv").sort_values("patient_id").reset_index(drop=True)
    b = pd.read_csv(splits).sort_values("patient_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


@skip_slow
def test_01_classification_benchmark(executed):
    nb, out = _done(executed, "01_classification_benchmark")
    assert not _outputs(nb, "error")
    results = pd.read_csv(out / "classifiers" / "results.csv")
    assert list(results["backbone"]) == ["mobilenetv2"]
    assert results.loc[0, "weights"] == "none" and results.loc[0, "img_size"] == 64 and results.loc[0, "epochs"] == 1
    assert len(_outputs(nb, "image")) >= 2  # confusion matrix + ROC shown inline
    _same_split(out / "classifiers", out / "splits.csv")


@skip_slow
def test_02_resunet_segmentation(executed):
    nb, out = _done(executed, "02_resunet_segmentation")
    run = out / "segmenter"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["img_size"] == 64 and metrics["epochs_run"] == 1 and metrics["weights"].startswith("none")
    assert (run / "segmenter.keras").is_file()
    assert len(_outputs(nb, "image")) >= 2  # training curves + examples
    _same_split(run, out / "splits.csv")


@skip_slow
def test_03_classseg_pipeline_trains_stand_ins_when_models_are_missing(executed):
    nb, out = _done(executed, "03_classseg_pipeline")
    stdout = "".join(_outputs(nb, "stdout"))
    assert "not found: training a stand-in classifier" in stdout and "stand-in ResUNet" in stdout
    test_ids = pd.read_csv(out / "splits.csv").query("split == 'test'")["patient_id"].tolist()
    assert sorted(p.name for p in (out / "test_patients").iterdir()) == sorted(test_ids)
    predictions = pd.read_csv(out / "pipeline" / "predictions.csv")
    data = executed["data"]
    n_slices = sum(1 for pid in test_ids for f in (data / pid).iterdir() if not f.stem.endswith("_mask"))
    assert len(predictions) == n_slices and (predictions["status"] == "ok").all()
    assert (out / "pipeline" / "metrics.md").is_file()
    assert len(_outputs(nb, "image")) >= 1  # the overlay figure


@skip_slow
def test_03_classseg_pipeline_uses_shipped_models_and_their_split(executed):
    nb, out = _done(executed, "03_shipped")
    stdout = "".join(_outputs(nb, "stdout"))
    assert stdout.count("(found)") == 2 and "stand-in" not in stdout
    assert not (out / "splits.csv").exists()  # no split computed: the shipped one (data/splits/kaggle_3m_seed0.csv)
    shipped = pd.read_csv(ROOT / "data" / "splits" / "kaggle_3m_seed0.csv").set_index("patient_id")["split"]
    assert all(shipped[pid] == "test" for pid in SUBSET)  # so all three patients are pipeline input
    assert sorted(p.name for p in (out / "test_patients").iterdir()) == sorted(SUBSET)
    predictions = pd.read_csv(out / "pipeline" / "predictions.csv")
    assert len(predictions) == len(SUBSET) * 2 * PER_CLASS and (predictions["status"] == "ok").all()
    assert not (out / "classifiers").exists() and not (out / "segmenter").exists()  # nothing trained


@skip_slow
def test_04_joint_vs_two_stage(executed):
    nb, out = _done(executed, "04_joint_vs_two_stage")
    assert not _outputs(nb, "error")
    for arm in ("seg_only", "cls_only", "joint"):
        for seed in (0, 1):
            _same_split(out / "arms" / f"{arm}_seed{seed}", out / "splits.csv")  # one split file for every arm
    table = pd.read_csv(out / "multitask.csv")
    assert list(table["model"]) == ["seg_only_resunet", "cls_only_resunet", "two_stage_resunet", "joint_resunet",
                                    "joint_resunet (mask head alone)", "two_stage_resunet (gate chosen on val)",
                                    "joint_resunet (gate chosen on val)"]
    assert (table["n_runs"] == 2).all() and (table["seed"] == "0, 1").all()
    assert table["accuracy_std"].notna().all()  # mean ± std over the two seeds
    assert "±" in (out / "multitask.md").read_text() and (out / "multitask.tex").is_file()
    metrics = json.loads((out / "pipeline_joint" / "metrics.json").read_text())
    assert metrics["gated"]["n_slices"] > 0  # the joint model through --joint
    assert len(_outputs(nb, "image")) >= 2
