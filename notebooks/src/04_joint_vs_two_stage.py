# Source of notebooks/04_joint_vs_two_stage.ipynb (jupytext percent format: `# %%` starts a cell).
# Edit here, then run `python notebooks/build_notebooks.py`; `%` magics are written as `# %` comments.

# %% [markdown]
# # 04 · Joint multi-task model vs the two-stage Class-Seg pipeline
#
# Trains, on **one split file**, the joint model of **seed 000** (K. Ravikiran, G. Rishi, V. Sai Kumar, U. Akhil, "A
# Hybrid Multi-Task Deep Learning Framework for Brain Tumor Classification and Segmentation Using ResNet-U-Net
# Architecture") (a shared ResNet-50 encoder, a U-Net decoder and a
# classification head trained with 1.0·CE + 1.5·Dice, eq. 7; AdamW with cosine decay) and the two-stage pipeline of
# **seed 002** (N. Duong-Trung, D. N. Le Ha, H. X. Huynh, "Classification-Segmentation Pipeline for MRI via Transfer
# Learning and Residual Networks") (phase 1 gate + phase 2 ResUNet); runs both through the same pipeline code on the
# test patients and
# compares every run in one table (`classseg.tables.compare_runs`).
#
# **How results are labelled.** Every table and figure states the weights (`imagenet` as in the papers, or `none` =
# random initialisation, used by CI and offline runs), the image size, the epochs, the seed and the split file; each
# run folder under `OUT_DIR` also holds `manifest.json` (configuration, library versions, machine). Runs with
# `WEIGHTS = "none"`, tiny images or one epoch (the CI settings) are smoke tests of the code, not reproductions of the
# papers' figures. Data: the full Kaggle *LGG MRI Segmentation* dataset (Buda et al. 2019) when Kaggle credentials
# exist, else the bundled 7-patient sample (labelled by its folder).
#
# Open in Colab (Runtime → Change runtime type → GPU) or run from a checkout (`jupyter lab notebooks/`).
# Settings live in the cell tagged `parameters`.


# %% tags=["parameters"]
# Parameters (tagged "parameters": papermill / CI insert a cell right after this one to override them)
INSTALL = True  # install classseg: from this checkout (../pyproject.toml) or, on Colab, from REPO_URL
REPO_URL = "https://github.com/YOUR-ACCOUNT/classseg.git"  # Colab only: the repository to clone
DATA_DIR = None  # None: the full Kaggle dataset when credentials exist, else the bundled 7-patient sample
SPLITS = None  # patient-level split CSV (patient_id,split); None: computed (70/15/15, stratified) with SEED
SEED = 0
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


# %%
# Install classseg (skipped with INSTALL = False, e.g. in CI where it is installed already)
import importlib.util
import sys
from pathlib import Path

IN_CHECKOUT = Path("../pyproject.toml").is_file()
REPO_ROOT = Path("..").resolve() if IN_CHECKOUT else Path("classseg").resolve()
if INSTALL:
    if IN_CHECKOUT:
        import subprocess

        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", ".."], check=True)  # = %pip install -e ..
    else:
        # Colab / a fresh machine: uncomment the next line (REPO_URL is set in the parameters cell).
        # !git clone -q {REPO_URL} classseg && pip install -q -e classseg
        print(f"Not inside a classseg checkout: uncomment the `git clone` line of this cell ({REPO_URL}).")
if importlib.util.find_spec("classseg") is None and REPO_ROOT.is_dir():
    sys.path.insert(0, str(REPO_ROOT))  # an editable install made in this kernel is importable only after a restart
import classseg

print("classseg", classseg.__version__, "from", Path(classseg.__file__).parent)


# %%
# Accelerator check (Colab: Runtime > Change runtime type > GPU)
from classseg.runinfo import environment_info

env = environment_info()
print("GPUs:", ", ".join(env["gpus"]) or "none - running on the CPU: keep IMG_SIZE and EPOCHS small")
print(f"python {env['python']}, tensorflow {env['tensorflow']}, keras {env['keras']}; "
      f"CPU {env['cpu']} x{env['cpu_count']}")


# %%
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


# %%
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


# %%
# Two-stage Class-Seg on SPLITS: phase 1 (gate chosen on validation), phase 2 (ResUNet from scratch)
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


# %%
# Joint model (seed 000) on the same split file
from classseg.training.joint import JointConfig, train_joint

joint_config = JointConfig(weights=weights, img_size=IMG_SIZE, schedule=SCHEDULE, class_loss=CLASS_LOSS,
                           multiscale_head=MULTISCALE_HEAD, seed=SEED, **epochs)
train_joint(joint_config, DATA_DIR, SPLITS, OUT / "joint")
JOINT = OUT / "joint" / "joint.keras"


# %%
# The pipeline's input: the split's test patients (a folder of links to their folders), or all of DATA_DIR
import shutil

from classseg.data import link_patients

if ON == "test":
    shutil.rmtree(OUT / "test_patients", ignore_errors=True)  # links only: the data itself is never touched
    TEST_DIR = link_patients(DATA_DIR, load_splits(SPLITS), "test", OUT / "test_patients")
else:
    TEST_DIR = DATA_DIR
print(f"pipeline input: {TEST_DIR} ({len(list(TEST_DIR.iterdir()))} entries)")


# %%
# Both through the same pipeline code on the same slices (gate, segment, post-process, evaluate)
from classseg.pipeline import main as run_pipeline

PIPE_TWO_STAGE, PIPE_JOINT = OUT / "pipeline_two_stage", OUT / "pipeline_joint"
for folder, models in ((PIPE_TWO_STAGE, ["--classifier", str(CLASSIFIER), "--segmenter", str(SEGMENTER)]),
                       (PIPE_JOINT, ["--joint", str(JOINT)])):
    shutil.rmtree(folder, ignore_errors=True)  # this notebook's own previous output
    assert run_pipeline(["--test-dir", str(TEST_DIR), "--out", str(folder), *models]) == 0


# %%
# One table from every run folder made above (test-split figures, same split file)
from classseg.tables import compare_runs, comparison_notes, write_table

table = compare_runs([OUT / "classifiers", OUT / "segmenter", OUT / "joint", PIPE_TWO_STAGE, PIPE_JOINT])
caption = "Joint multi-task model (seed 000) vs two-stage Class-Seg (seed 002), test split"
paths = write_table(table, OUT / "comparison", caption, comparison_notes(table))
display(Markdown(paths["md"].read_text()))
display(table.drop(columns=["run_dir"]).round(4))


# %%
# Training curves: joint model and ResUNet
LABEL = f"{IMG_SIZE} px, seed {SEED}, split {SPLITS.name}"
display(Markdown(f"**Joint model** (weights={weights or 'none'}, {LABEL}, schedule {SCHEDULE}, loss {CLASS_LOSS})"))
display(Image(filename=str(OUT / "joint" / "training_curves.png")))
display(Markdown(f"**ResUNet, two-stage phase 2** (from scratch, {LABEL})"))
display(Image(filename=str(OUT / "segmenter" / "training_curves.png")))
print("run folder:", OUT.resolve())
