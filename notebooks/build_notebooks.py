"""Generate the four Colab-style classseg notebooks with nbformat, outputs cleared.

The notebooks are thin: every cell calls the package (``classseg.training``, ``classseg.pipeline``,
``classseg.tables``); this script is their reviewable source. Run it after editing a cell::

    python notebooks/build_notebooks.py           # (re)write notebooks/*.ipynb
    python notebooks/build_notebooks.py --check   # exit 1 when a committed notebook differs from this source

Each notebook: title (what it reproduces, how results are labelled), a ``parameters`` cell
(papermill-style: a cell injected right after it overrides the values; CI does so with tiny
settings), an install cell, a GPU check, the data cell (Kaggle when credentials exist, else the
bundled sample), one patient-level split file for every stage, the work, tables and figures inline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ("01_classification_benchmark", "02_resunet_segmentation", "03_classseg_pipeline",
             "04_joint_vs_two_stage")

SEED_002 = ('**seed 002** (N. Duong-Trung, D. N. Le Ha, H. X. Huynh, "Classification-Segmentation Pipeline '
            'for MRI via Transfer Learning and Residual Networks")')
SEED_000 = ('**seed 000** (K. Ravikiran, G. Rishi, V. Sai Kumar, U. Akhil, "A Hybrid Multi-Task Deep Learning '
            'Framework for Brain Tumor Classification and Segmentation Using ResNet-U-Net Architecture")')
LABELLING = """\
**How results are labelled.** Every table and figure states the weights (`imagenet` as in the papers, or `none` =
random initialisation, used by CI and offline runs), the image size, the epochs, the seed and the split file; each
run folder under `OUT_DIR` also holds `manifest.json` (configuration, library versions, machine). Runs with
`WEIGHTS = "none"`, tiny images or one epoch (the CI settings) are smoke tests of the code, not reproductions of the
papers' figures. Data: the full Kaggle *LGG MRI Segmentation* dataset (Buda et al. 2019) when Kaggle credentials
exist, else the bundled 7-patient sample (labelled by its folder).

Open in Colab (Runtime → Change runtime type → GPU) or run from a checkout (`jupyter lab notebooks/`).
Settings live in the cell tagged `parameters`."""

# --------------------------------------------------------------------------------------------- shared cells
COMMON_PARAMS = """\
# Parameters (tagged "parameters": papermill / CI insert a cell right after this one to override them)
INSTALL = True  # install classseg: from this checkout (../pyproject.toml) or, on Colab, from REPO_URL
REPO_URL = "https://github.com/YOUR-ACCOUNT/classseg.git"  # Colab only: the repository to clone
DATA_DIR = None  # None: the full Kaggle dataset when credentials exist, else the bundled 7-patient sample
SPLITS = None  # patient-level split CSV (patient_id,split); None: computed (70/15/15, stratified) with SEED
SEED = 0
"""

INSTALL = """\
# Install classseg (skipped with INSTALL = False, e.g. in CI where it is installed already)
import importlib.util
import sys
from pathlib import Path

IN_CHECKOUT = Path("../pyproject.toml").is_file()
REPO_ROOT = Path("..").resolve() if IN_CHECKOUT else Path("classseg").resolve()
if INSTALL:
    if IN_CHECKOUT:
        %pip install -q -e ..
    else:
        # Colab / a fresh machine: uncomment the next line (REPO_URL is set in the parameters cell).
        # !git clone -q {REPO_URL} classseg && pip install -q -e classseg
        print(f"Not inside a classseg checkout: uncomment the `git clone` line of this cell ({REPO_URL}).")
if importlib.util.find_spec("classseg") is None and REPO_ROOT.is_dir():
    sys.path.insert(0, str(REPO_ROOT))  # an editable install made in this kernel is importable only after a restart
import classseg

print("classseg", classseg.__version__, "from", Path(classseg.__file__).parent)
"""

GPU = """\
# Accelerator check (Colab: Runtime > Change runtime type > GPU)
from classseg.runinfo import environment_info

env = environment_info()
print("GPUs:", ", ".join(env["gpus"]) or "none - running on the CPU: keep IMG_SIZE and EPOCHS small")
print(f"python {env['python']}, tensorflow {env['tensorflow']}, keras {env['keras']}; "
      f"CPU {env['cpu']} x{env['cpu_count']}")
"""

DATA = """\
# Data: the full Kaggle dataset when credentials exist (downloaded once, reused), else the bundled sample
import pandas as pd
from IPython.display import Image, Markdown, display

from classseg.data import discover, summarize
from classseg.data.kaggle import kaggle_dataset

DATA_DIR = kaggle_dataset() if DATA_DIR is None else Path(DATA_DIR)
slices = discover(DATA_DIR)
summary = summarize(slices)
display(pd.Series({k: summary[k] for k in ("patients", "slices", "tumor_slices", "tumor_share")},
                  name=str(DATA_DIR)).to_frame())
"""

SPLIT = """\
# One patient-level split file for every stage (docs/design.md, "Splits")
from classseg.data import apply_splits, load_splits, resolve_splits, save_splits, split_table

OUT = Path(OUT_DIR)
OUT.mkdir(parents=True, exist_ok=True)
if SPLITS is None:
    SPLITS = save_splits(split_table(resolve_splits(slices, seed=SEED)), OUT / "splits.csv")
    print(f"computed a patient-level 70/15/15 split with seed {SEED}: {SPLITS}")
SPLITS = Path(SPLITS)
listed = load_splits(SPLITS)
unlisted = sorted(set(slices["patient_id"]) - set(listed["patient_id"]))
if unlisted:  # training on DATA_DIR with this split stops with an error; the pipeline uses listed patients only
    print(f"{len(unlisted)} patient(s) of DATA_DIR are not in {SPLITS.name}, e.g. {unlisted[:3]}")
display(apply_splits(slices[slices["patient_id"].isin(listed["patient_id"])], listed).groupby("split").agg(
    patients=("patient_id", "nunique"), slices=("slice", "size"), tumor_slices=("tumor", "sum")))
"""

TEST_PATIENTS = """\
# The pipeline's input: the split's test patients (a folder of links to their folders), or all of DATA_DIR
import shutil

from classseg.data import link_patients

if ON == "test":
    shutil.rmtree(OUT / "test_patients", ignore_errors=True)  # links only: the data itself is never touched
    TEST_DIR = link_patients(DATA_DIR, load_splits(SPLITS), "test", OUT / "test_patients")
else:
    TEST_DIR = DATA_DIR
print(f"pipeline input: {TEST_DIR} ({len(list(TEST_DIR.iterdir()))} entries)")
"""

def _params(extra: str) -> str:
    return COMMON_PARAMS + extra


def _setup() -> list:
    return [new_code_cell(INSTALL), new_code_cell(GPU), new_code_cell(DATA), new_code_cell(SPLIT)]


# --------------------------------------------------------------------------------------------- notebook 01
def _notebook_01() -> list:
    title = f"""\
# 01 · Phase 1 of Class-Seg: frozen-backbone classifier benchmark

Reproduces phase 1 of {SEED_002}: five ImageNet backbones (ResNet50, ResNet50V2, InceptionResNetV2,
EfficientNetB0, MobileNetV2), frozen, each with a trainable dense head (Figure 2), trained with categorical
cross-entropy on a patient-level 70/15/15 split — the benchmark table (Table I) and the confusion matrix and ROC
curve of the best backbone. The best backbone (the gate, "model 1") is chosen on the **validation** split; every
figure and table is on the **test** split (`classseg.training.classifiers.train_classifiers`).

{LABELLING}"""
    params = _params("""\
OUT_DIR = "runs/01_classification_benchmark"
WEIGHTS = "imagenet"  # "imagenet" (paper), "none" (random init: offline / CI) or a weights file
IMG_SIZE = 256  # seed 002
EPOCHS = 20  # upper bound: early stopping (patience 5) on the validation loss
BATCH_SIZE = 32
BACKBONES = "resnet50,resnet50v2,inceptionresnetv2,efficientnetb0,mobilenetv2"  # seed 002, Table I
HEAD = "paper"  # "paper": Dense 1024-1024-1024-256 + dropout 0.3 (Figure 2); "gap": pooling + softmax only
REPEATS = 1  # the paper averages 3 runs
""")
    train = """\
# Phase 1: every backbone frozen (features cached once), head trained; gate chosen on validation
from classseg.runinfo import read_json
from classseg.training.classifiers import ClassifierConfig, train_classifiers

weights = None if str(WEIGHTS).lower() == "none" else WEIGHTS  # "none" = random initialisation
config = ClassifierConfig(backbones=tuple(b.strip() for b in BACKBONES.split(",") if b.strip()), weights=weights,
                          img_size=IMG_SIZE, head=HEAD, epochs=EPOCHS, batch_size=BATCH_SIZE, repeats=REPEATS,
                          seed=SEED)
RUN = OUT / "classifiers"
results = train_classifiers(config, DATA_DIR, SPLITS, RUN)
gate = read_json(RUN / "results.json")["gate"]
LABEL = (f"weights={weights or 'none'}, {IMG_SIZE} px, head {HEAD}, epochs<={EPOCHS}, repeats {REPEATS}, "
         f"seed {SEED}, split {SPLITS.name}")
"""
    table = """\
# Benchmark table (seed 002, Table I), test split
display(Markdown(f"**Phase 1, test split** ({LABEL}). Gate chosen on validation: **{gate['backbone']}**, "
                 f"threshold {gate['threshold']:.3f} for sensitivity >= {gate['target_sensitivity']} on val."))
display(results.round(4))
"""
    figures = """\
# Confusion matrix and ROC curve of the best backbone (the gate), test split
best = RUN / gate["backbone"]
display(Markdown(f"**{gate['backbone']}**, test split ({LABEL})"))
display(Image(filename=str(best / "confusion_matrix.png")), Image(filename=str(best / "roc.png")))
print("run folder:", RUN.resolve())
"""
    return [new_markdown_cell(title), new_code_cell(params, metadata={"tags": ["parameters"]}), *_setup(),
            new_code_cell(train), new_code_cell(table), new_code_cell(figures)]


# --------------------------------------------------------------------------------------------- notebook 02
def _notebook_02() -> list:
    title = f"""\
# 02 · Phase 2 of Class-Seg: ResUNet segmentation

Reproduces phase 2 of {SEED_002}: a ResUNet trained **from scratch** on the tumor slices with the Focal Tversky
loss (Abraham & Khan, ISBI 2019), evaluated with Dice, IoU and HD95 per slice and Dice per patient; the validation
soft Tversky index is the figure the paper reports (0.89). Shown: the metrics, the training curves and the examples
figure (the paper's Figure 4: image, ground truth, prediction) of test patients
(`classseg.training.segmenter.train_segmenter`).

{LABELLING}

The ResUNet has no pretrained weights (the paper trains it from scratch), so this notebook has no `WEIGHTS`."""
    params = _params("""\
OUT_DIR = "runs/02_resunet_segmentation"
IMG_SIZE = 256  # seed 002
EPOCHS = 30  # upper bound: early stopping (patience 20) on validation Dice
BATCH_SIZE = 16
LOSS = "focal_tversky"  # seed 002 (eq. 3-4); also "tversky", "dice", "bce_dice"
AUGMENT = True
""")
    train = """\
# Phase 2: ResUNet from scratch on the train patients' tumor slices; best epoch on validation Dice
from classseg.training.segmenter import SegmenterConfig, train_segmenter

config = SegmenterConfig(img_size=IMG_SIZE, epochs=EPOCHS, batch_size=BATCH_SIZE, loss=LOSS, augment=AUGMENT,
                         seed=SEED)
RUN = OUT / "segmenter"
metrics = train_segmenter(config, DATA_DIR, SPLITS, RUN)
LABEL = (f"ResUNet from scratch, {IMG_SIZE} px, {metrics['epochs_run']} of {EPOCHS} epochs (best "
         f"{metrics['best_epoch']}), loss {LOSS}, seed {SEED}, split {SPLITS.name}")
"""
    table = """\
# Metrics (test and validation) and volume Dice of each test patient
display(Markdown((RUN / "metrics.md").read_text()))
display(pd.DataFrame(metrics["per_patient"]).round(4))
"""
    figures = """\
# Training curves and examples (seed 002, Figure 4) of test slices with tumor
display(Markdown(f"**Training curves and test examples** ({LABEL})"))
display(Image(filename=str(RUN / "training_curves.png")), Image(filename=str(RUN / "examples.png")))
print("run folder:", RUN.resolve())
"""
    return [new_markdown_cell(title), new_code_cell(params, metadata={"tags": ["parameters"]}), *_setup(),
            new_code_cell(train), new_code_cell(table), new_code_cell(figures)]


# --------------------------------------------------------------------------------------------- notebook 03
def _notebook_03() -> list:
    title = f"""\
# 03 · Phase 3: the Class-Seg pipeline

Reproduces phase 3 of {SEED_002} (Algorithm 1): the classifier ("model 1") gates every MRI slice and the ResUNet
("model 2") outlines the tumor only on the slices it calls tumor; masks are post-processed (threshold, closing,
hole filling). Run here with `python -m classseg.pipeline` on the test patients of the split: `predictions.csv`,
masks, overlays (green = ground truth, red = prediction) and `metrics.md` (gated pipeline beside "segment every
slice").

Models: the shipped `saved_models/classifier.keras` and `segmenter.keras` (or `CLASSIFIER` / `SEGMENTER`). When
they are missing, small stand-ins are trained here with the settings below and the notebook **says so**: their
figures describe those small models, not the shipped ones.

{LABELLING}"""
    params = _params("""\
OUT_DIR = "runs/03_classseg_pipeline"
CLASSIFIER = None  # .keras / .onnx; None: MODELS_DIR/classifier.keras (the shipped model)
SEGMENTER = None  # .keras / .onnx; None: MODELS_DIR/segmenter.keras
MODELS_DIR = None  # None: the repository's saved_models/ (or $CLASSSEG_MODELS)
ON = "test"  # "test": the split's test patients; "all": every patient folder of DATA_DIR
N_OVERLAYS = 4
# Only used when a model is missing and a small stand-in is trained here:
WEIGHTS = "imagenet"  # "imagenet", "none" (random init: offline / CI) or a weights file
IMG_SIZE = 128
EPOCHS = 5
BACKBONES = "mobilenetv2"
HEAD = "gap"
""")
    models = """\
# Models: the shipped ones when present, with the split they were trained on
from classseg.pipeline import default_models_dir

SHIPPED = CLASSIFIER is None and SEGMENTER is None
MODELS_DIR = Path(MODELS_DIR) if MODELS_DIR is not None else default_models_dir()
CLASSIFIER = Path(CLASSIFIER) if CLASSIFIER is not None else MODELS_DIR / "classifier.keras"
SEGMENTER = Path(SEGMENTER) if SEGMENTER is not None else MODELS_DIR / "segmenter.keras"
shipped_split = Path(classseg.__file__).resolve().parents[1] / "data" / "splits" / "kaggle_3m_seed0.csv"
if SPLITS is None and SHIPPED and CLASSIFIER.is_file() and SEGMENTER.is_file() and shipped_split.is_file():
    SPLITS = shipped_split  # the shipped models' split: its test patients (= the bundled sample) are held out
MODEL_LABEL = "shipped models" if SHIPPED else "given models"
print("classifier:", CLASSIFIER, "(found)" if CLASSIFIER.is_file() else "(missing)")
print("segmenter: ", SEGMENTER, "(found)" if SEGMENTER.is_file() else "(missing)")
"""
    stand_ins = """\
# Missing models: small stand-ins trained here on the split's train/val patients (labelled as such)
from classseg.runinfo import read_json
from classseg.training.classifiers import ClassifierConfig, gate_model_path, train_classifiers
from classseg.training.segmenter import SegmenterConfig, train_segmenter

weights = None if str(WEIGHTS).lower() == "none" else WEIGHTS  # "none" = random initialisation
if not (CLASSIFIER.is_file() and SEGMENTER.is_file()):
    MODEL_LABEL = (f"stand-in model(s) trained here: weights={weights or 'none'}, {IMG_SIZE} px, <={EPOCHS} epochs, "
                   f"seed {SEED}, split {SPLITS.name}")
if not CLASSIFIER.is_file():
    print(f"{CLASSIFIER} not found: training a stand-in classifier here ({BACKBONES}, weights={weights or 'none'}, "
          f"{IMG_SIZE} px, <={EPOCHS} epochs); the figures below are NOT those of the shipped model")
    config = ClassifierConfig(backbones=tuple(b.strip() for b in BACKBONES.split(",") if b.strip()),
                              weights=weights, img_size=IMG_SIZE, head=HEAD, epochs=EPOCHS, seed=SEED)
    train_classifiers(config, DATA_DIR, SPLITS, OUT / "classifiers")
    CLASSIFIER = gate_model_path(OUT / "classifiers" / "results.json")
if not SEGMENTER.is_file():
    print(f"{SEGMENTER} not found: training a stand-in ResUNet here (from scratch, {IMG_SIZE} px, <={EPOCHS} "
          f"epochs); the figures below are NOT those of the shipped model")
    train_segmenter(SegmenterConfig(img_size=IMG_SIZE, epochs=EPOCHS, seed=SEED), DATA_DIR, SPLITS, OUT / "segmenter")
    SEGMENTER = OUT / "segmenter" / "segmenter.keras"
"""
    pipeline = """\
# Phase 3: gate every slice, segment those called tumor -> predictions.csv, masks/, overlays/, metrics.md
from classseg.pipeline import main as run_pipeline

PIPE = OUT / "pipeline"
shutil.rmtree(PIPE, ignore_errors=True)  # this notebook's own previous output (the pipeline wants an empty folder)
assert run_pipeline(["--test-dir", str(TEST_DIR), "--out", str(PIPE),
                     "--classifier", str(CLASSIFIER), "--segmenter", str(SEGMENTER)]) == 0
"""
    results = """\
# metrics.md (gated pipeline vs segment every slice) and the first predictions
display(Markdown(f"**Models:** {MODEL_LABEL}"))
display(Markdown((PIPE / "metrics.md").read_text() if (PIPE / "metrics.md").is_file()
                 else "No ground-truth masks in the input folder: no metrics."))
predictions = pd.read_csv(PIPE / "predictions.csv")
display(predictions.head(10))
"""
    overlays = """\
# A few overlays of slices called tumor (green = ground truth, red = prediction)
%matplotlib inline
import matplotlib.pyplot as plt

called = predictions[predictions["final_call"] == "tumor"].sort_values("mask_area_px", ascending=False)
pick = (called if len(called) else predictions[predictions["status"] == "ok"]).head(N_OVERLAYS)
fig, axes = plt.subplots(1, max(len(pick), 1), figsize=(3.2 * max(len(pick), 1), 3.6), squeeze=False)
for ax, row in zip(axes[0], pick.itertuples()):
    ax.imshow(plt.imread(PIPE / row.overlay_path))
    ax.set_title(f"{Path(row.image).name}\\nP(tumor) {row.gate_prob:.2f}", fontsize=8)
for ax in axes[0]:
    ax.axis("off")
fig.suptitle(f"Class-Seg on {TEST_DIR.name}: {CLASSIFIER.parent.name}/{CLASSIFIER.name} + "
             f"{SEGMENTER.parent.name}/{SEGMENTER.name}\\n({MODEL_LABEL})", fontsize=9)
plt.show()
print("output folder:", PIPE.resolve())
"""
    return [new_markdown_cell(title), new_code_cell(params, metadata={"tags": ["parameters"]}),
            new_code_cell(INSTALL), new_code_cell(GPU), new_code_cell(DATA), new_code_cell(models),
            new_code_cell(SPLIT), new_code_cell(stand_ins), new_code_cell(TEST_PATIENTS), new_code_cell(pipeline),
            new_code_cell(results), new_code_cell(overlays)]


# --------------------------------------------------------------------------------------------- notebook 04
def _notebook_04() -> list:
    title = f"""\
# 04 · Joint multi-task model vs the two-stage Class-Seg pipeline

Trains, on **one split file**, the joint model of {SEED_000} (a shared ResNet-50 encoder, a U-Net decoder and a
classification head trained with 1.0·CE + 1.5·Dice, eq. 7; AdamW with cosine decay) and the two-stage pipeline of
{SEED_002} (phase 1 gate + phase 2 ResUNet); runs both through the same pipeline code on the test patients and
compares every run in one table (`classseg.tables.compare_runs`).

{LABELLING}"""
    params = _params("""\
OUT_DIR = "runs/04_joint_vs_two_stage"
WEIGHTS = "imagenet"  # the gate's backbone and the joint encoder: "imagenet" (papers), "none" or a weights file
IMG_SIZE = 224  # one size for every model (seed 000: 224, seed 002: 256); a multiple of 32
EPOCHS = None  # None: each stage's paper default (classifier 20, ResUNet 30, joint 25); a number sets all three
BACKBONES = "resnet50"  # the gate's backbone(s): ResNet-50 like the joint encoder (notebook 01 benchmarks all five)
HEAD = "paper"  # the gate's head (seed 002, Figure 2)
SCHEDULE = "fixed"  # joint loss weights: "fixed" (seed 000) or seed 001's "freeze" / "dynamic"
CLASS_LOSS = "ce"  # joint class loss: "ce" (seed 000) or "focal" (seed 001)
MULTISCALE_HEAD = False  # seed 004's multi-scale class head
ON = "test"  # "test": the split's test patients; "all": every patient folder of DATA_DIR
""")
    two_stage = """\
# Two-stage Class-Seg on SPLITS: phase 1 (gate chosen on validation), phase 2 (ResUNet from scratch)
from classseg.runinfo import read_json
from classseg.training.classifiers import ClassifierConfig, gate_model_path, train_classifiers
from classseg.training.segmenter import SegmenterConfig, train_segmenter

weights = None if str(WEIGHTS).lower() == "none" else WEIGHTS  # "none" = random initialisation
epochs = {} if EPOCHS is None else {"epochs": EPOCHS}
config = ClassifierConfig(backbones=tuple(b.strip() for b in BACKBONES.split(",") if b.strip()), weights=weights,
                          img_size=IMG_SIZE, head=HEAD, seed=SEED, **epochs)
train_classifiers(config, DATA_DIR, SPLITS, OUT / "classifiers")
CLASSIFIER = gate_model_path(OUT / "classifiers" / "results.json")
train_segmenter(SegmenterConfig(img_size=IMG_SIZE, seed=SEED, **epochs), DATA_DIR, SPLITS, OUT / "segmenter")
SEGMENTER = OUT / "segmenter" / "segmenter.keras"
"""
    joint = """\
# Joint model (seed 000) on the same split file
from classseg.training.joint import JointConfig, train_joint

joint_config = JointConfig(weights=weights, img_size=IMG_SIZE, schedule=SCHEDULE, class_loss=CLASS_LOSS,
                           multiscale_head=MULTISCALE_HEAD, seed=SEED, **epochs)
train_joint(joint_config, DATA_DIR, SPLITS, OUT / "joint")
JOINT = OUT / "joint" / "joint.keras"
"""
    pipelines = """\
# Both through the same pipeline code on the same slices (gate, segment, post-process, evaluate)
from classseg.pipeline import main as run_pipeline

PIPE_TWO_STAGE, PIPE_JOINT = OUT / "pipeline_two_stage", OUT / "pipeline_joint"
for folder, models in ((PIPE_TWO_STAGE, ["--classifier", str(CLASSIFIER), "--segmenter", str(SEGMENTER)]),
                       (PIPE_JOINT, ["--joint", str(JOINT)])):
    shutil.rmtree(folder, ignore_errors=True)  # this notebook's own previous output
    assert run_pipeline(["--test-dir", str(TEST_DIR), "--out", str(folder), *models]) == 0
"""
    compare = """\
# One table from every run folder made above (test-split figures, same split file)
from classseg.tables import compare_runs, comparison_notes, write_table

table = compare_runs([OUT / "classifiers", OUT / "segmenter", OUT / "joint", PIPE_TWO_STAGE, PIPE_JOINT])
caption = "Joint multi-task model (seed 000) vs two-stage Class-Seg (seed 002), test split"
paths = write_table(table, OUT / "comparison", caption, comparison_notes(table))
display(Markdown(paths["md"].read_text()))
display(table.drop(columns=["run_dir"]).round(4))
"""
    figures = """\
# Training curves: joint model and ResUNet
LABEL = f"{IMG_SIZE} px, seed {SEED}, split {SPLITS.name}"
display(Markdown(f"**Joint model** (weights={weights or 'none'}, {LABEL}, schedule {SCHEDULE}, loss {CLASS_LOSS})"))
display(Image(filename=str(OUT / "joint" / "training_curves.png")))
display(Markdown(f"**ResUNet, two-stage phase 2** (from scratch, {LABEL})"))
display(Image(filename=str(OUT / "segmenter" / "training_curves.png")))
print("run folder:", OUT.resolve())
"""
    return [new_markdown_cell(title), new_code_cell(params, metadata={"tags": ["parameters"]}), *_setup(),
            new_code_cell(two_stage), new_code_cell(joint), new_code_cell(TEST_PATIENTS), new_code_cell(pipelines),
            new_code_cell(compare), new_code_cell(figures)]


BUILDERS = {"01_classification_benchmark": _notebook_01, "02_resunet_segmentation": _notebook_02,
            "03_classseg_pipeline": _notebook_03, "04_joint_vs_two_stage": _notebook_04}


# --------------------------------------------------------------------------------------------- assembly
def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (one of :data:`NOTEBOOKS`), outputs cleared, deterministic cell ids."""
    nb = new_notebook(cells=BUILDERS[name]())
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:02d}"
        cell["source"] = cell["source"].rstrip("\n")
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": [], "gpuType": "T4"},
    }
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    """The file text nbformat writes for ``nb``."""
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) ``notebooks/<name>.ipynb`` for every notebook."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a notebook on disk differs from this source")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write to (default: notebooks/)")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = args.out / f"{name}.ipynb"
        text = render(build(name))
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("out of date (run python notebooks/build_notebooks.py): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
