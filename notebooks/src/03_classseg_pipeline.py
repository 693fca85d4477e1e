# Source of notebooks/03_classseg_pipeline.ipynb (jupytext percent format: `# %%` starts a cell).
# Edit here, then run `python notebooks/build_notebooks.py`; `%` magics are written as `# %` comments.

# %% [markdown]
# # 03 · Phase 3: the Class-Seg pipeline
#
# Reproduces phase 3 of **seed 002** (N. Duong-Trung, D. N. Le Ha, H. X. Huynh, "Classification-Segmentation
# Pipeline for MRI via Transfer Learning and Residual Networks") (Algorithm 1): the classifier ("model 1") gates
# every MRI slice and the ResUNet
# ("model 2") outlines the tumor only on the slices it calls tumor; masks are post-processed (threshold, closing,
# hole filling). Run here with `python -m classseg.pipeline` on the test patients of the split: `predictions.csv`,
# masks, overlays (green = ground truth, red = prediction) and `metrics.md` (gated pipeline beside "segment every
# slice").
#
# Models: the shipped `saved_models/classifier.keras` and `segmenter.keras` (or `CLASSIFIER` / `SEGMENTER`). When
# they are missing, small stand-ins are trained here with the settings below and the notebook **says so**: their
# figures describe those small models, not the shipped ones.
#
# **How results are labelled.** Every table and figure states the weights (`imagenet` as in the papers, or `none` =
# random initialisation, used by CI and offline runs), the image size, the epochs, the seed and the split file; each
# run folder under `OUT_DIR` also holds `manifest.json` (configuration, library versions, machine). Runs with
# `WEIGHTS = "none"`, tiny images or one epoch (the CI settings) are smoke tests of the code, not reproductions of the
# papers' figures. Data: the full Kaggle *LGG MRI Segmentation* dataset (Buda et al. 2019) when Kaggle credentials
# exist, else the bundled 7-patient sample (labelled by its folder).
#
# Open in Colab (Runtime → Change runtime type → GPU; set `SOURCE` to the repository's git URL) or run from a
# checkout (`jupyter lab notebooks/`).
# Settings live in the cell tagged `parameters`.


# %% tags=["parameters"]
# Parameters (tagged "parameters": papermill / CI insert a cell right after this one to override them)
INSTALL = True  # install classseg: from this checkout (../pyproject.toml), else from SOURCE
SOURCE = None  # not in a checkout and not installed: what pip installs classseg from (a path, wheel or git URL)
DATA_DIR = None  # None: the full Kaggle dataset when credentials exist, else the bundled 7-patient sample
SPLITS = None  # patient-level split CSV (patient_id,split); None: computed (70/15/15, stratified) with SEED
SEED = 0  # seed of a computed split and of any stand-in model trained here
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


# %% include: _install.py


# %%
# Accelerator check (Colab: Runtime > Change runtime type > GPU)
from classseg.workflows.notebook import check_accelerator

env = check_accelerator()


# %%
# Data: the full Kaggle dataset when credentials exist (downloaded once, reused), else the bundled sample
import pandas as pd
from IPython.display import Markdown, display

from classseg.workflows.notebook import load_data

DATA_DIR, slices = load_data(DATA_DIR)


# %%
# Models: the shipped ones when present, with the split they were trained on
from pathlib import Path

import classseg
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


# %%
# One patient-level split file for every stage (docs/design.md, "Splits")
from classseg.workflows.notebook import prepare_split

OUT, SPLITS = prepare_split(slices, OUT_DIR, SPLITS, SEED)


# %%
# Missing models: small stand-ins trained here on the split's train/val patients (labelled as such)
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


# %%
# The pipeline's input: the split's test patients (a folder of links to their folders), or all of DATA_DIR
import shutil

from classseg.data import link_patients, load_splits

if ON == "test":
    shutil.rmtree(OUT / "test_patients", ignore_errors=True)  # links only: the data itself is never touched
    TEST_DIR = link_patients(DATA_DIR, load_splits(SPLITS), "test", OUT / "test_patients")
else:
    TEST_DIR = DATA_DIR
print(f"pipeline input: {TEST_DIR} ({len(list(TEST_DIR.iterdir()))} entries)")


# %%
# Phase 3: gate every slice, segment those called tumor -> predictions.csv, masks/, overlays/, metrics.md
from classseg.pipeline import main as run_pipeline

PIPE = OUT / "pipeline"
shutil.rmtree(PIPE, ignore_errors=True)  # this notebook's own previous output (the pipeline wants an empty folder)
assert run_pipeline(["--test-dir", str(TEST_DIR), "--out", str(PIPE),
                     "--classifier", str(CLASSIFIER), "--segmenter", str(SEGMENTER)]) == 0


# %%
# metrics.md (gated pipeline vs segment every slice) and the first predictions
display(Markdown(f"**Models:** {MODEL_LABEL}"))
display(Markdown((PIPE / "metrics.md").read_text() if (PIPE / "metrics.md").is_file()
                 else "No ground-truth masks in the input folder: no metrics."))
predictions = pd.read_csv(PIPE / "predictions.csv")
display(predictions.head(10))


# %%
# A few overlays of slices called tumor (green = ground truth, red = prediction)
# %matplotlib inline
import matplotlib.pyplot as plt

called = predictions[predictions["final_call"] == "tumor"].sort_values("mask_area_px", ascending=False)
pick = (called if len(called) else predictions[predictions["status"] == "ok"]).head(N_OVERLAYS)
fig, axes = plt.subplots(1, max(len(pick), 1), figsize=(3.2 * max(len(pick), 1), 3.6), squeeze=False)
for ax, row in zip(axes[0], pick.itertuples()):
    ax.imshow(plt.imread(PIPE / row.overlay_path))
    ax.set_title(f"{Path(row.image).name}\nP(tumor) {row.gate_prob:.2f}", fontsize=8)
for ax in axes[0]:
    ax.axis("off")
fig.suptitle(f"Class-Seg on {TEST_DIR.name}: {CLASSIFIER.parent.name}/{CLASSIFIER.name} + "
             f"{SEGMENTER.parent.name}/{SEGMENTER.name}\n({MODEL_LABEL})", fontsize=9)
plt.show()
print("output folder:", PIPE.resolve())
