# Source of notebooks/04_joint_vs_two_stage.ipynb (jupytext percent format: `# %%` starts a cell).
# Edit here, then run `python notebooks/build_notebooks.py`; `%` magics are written as `# %` comments.

# %% [markdown]
# # 04 · Joint multi-task learning vs the two-stage pipeline, at equal footing
#
# Does multi-task learning help? The joint model of **seed 000** (K. Ravikiran, G. Rishi, V. Sai Kumar, U. Akhil,
# "A Hybrid Multi-Task Deep Learning Framework for Brain Tumor Classification and Segmentation Using ResNet-U-Net
# Architecture": one encoder, a U-Net decoder and a GAP-dropout-softmax head, loss 1.0·CE + 1.5·Dice, AdamW with
# cosine decay) against the two-stage pipeline of **seed 002** (N. Duong-Trung, D. N. Le Ha, H. X. Huynh,
# "Classification-Segmentation Pipeline for MRI via Transfer Learning and Residual Networks") and the single-task
# models, with **one architecture** (seed 002's ResUNet; the joint model adds a class head), one split, the same
# epochs, data, augmentation, optimiser and evaluation. Only the loss weights differ: `seg_only` and `cls_only` set
# one task's weight to 0; `two_stage` gates `seg_only`'s masks with `cls_only`; `joint_freeze` / `joint_dynamic`
# are seed 001's loss-weight schedules (Li et al. 2023, MMRAN); `joint_multiscale` is seed 004's multi-scale class
# head (Bui et al. 2026). Each arm runs for every seed in `SEEDS`; the table gives mean ± std
# (`classseg compare --aggregate`). The figures of `docs/multitask.md` come from the same code
# (`benchmarks/multitask_compare.py`) on the 75-patient split. Seed 000's own configuration (ImageNet ResNet-50,
# 224 px, GPU) is `classseg train-joint --architecture resnet50_unet` / `run-all --profile paper`.
#
# **How results are labelled.** Every table states the weights (here `none (from scratch)`, or the model given as
# `INIT`), the image size, the epochs, the seeds and the split file; each run folder under `OUT_DIR` also holds
# `manifest.json` (configuration, library versions, machine). Runs with tiny images or one epoch (the CI settings)
# are smoke tests of the code, not results. Data: the full Kaggle *LGG MRI Segmentation* dataset (Buda et al. 2019)
# when Kaggle credentials exist, else the bundled 7-patient sample (labelled by its folder).
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
SEED = 0  # seed of a computed split
OUT_DIR = "runs/04_joint_vs_two_stage"
ARMS = "seg_only,cls_only,joint,joint_freeze,joint_dynamic,joint_multiscale"  # see the text above
SEEDS = "0,1,2"  # one run per arm and seed; the table gives mean ± std over them
IMG_SIZE = 96  # one size for every arm (a multiple of 16)
WIDTH = 0.5  # ResUNet filter multiplier (1.0 = seed 002's 1.2 M parameters)
EPOCHS = 9  # the same for every arm (9 = 3 x 3: seed 001's freeze schedule gets 3 epochs per phase)
LR = 2e-3  # AdamW peak learning rate, cosine decay (seed 000's 1e-4 is for an ImageNet encoder)
INIT = None  # None: every arm from scratch; or a ResUNet segmenter .keras to start every arm from
ON = "test"  # "test": the split's test patients; "all": every patient folder of DATA_DIR (pipeline cell)


# %% include: _install.py


# %%
# Accelerator check (Colab: Runtime > Change runtime type > GPU)
from classseg.workflows.notebook import check_accelerator

env = check_accelerator()


# %%
# Data: the full Kaggle dataset when credentials exist (downloaded once, reused), else the bundled sample
import pandas as pd
from IPython.display import Image, Markdown, display

from classseg.workflows.notebook import load_data

DATA_DIR, slices = load_data(DATA_DIR)


# %%
# One patient-level split file for every stage (docs/design.md, "Splits")
from classseg.workflows.notebook import prepare_split

OUT, SPLITS = prepare_split(slices, OUT_DIR, SPLITS, SEED)


# %%
# Every arm for every seed on SPLITS (a finished run folder is kept: rerunning the cell resumes)
from classseg.training.multitask import MultitaskConfig, caption, comparison_runs, train_arms

config = MultitaskConfig(arms=tuple(a.strip() for a in ARMS.split(",") if a.strip()),
                         seeds=tuple(int(s) for s in str(SEEDS).split(",")), img_size=IMG_SIZE, width=WIDTH,
                         epochs=EPOCHS, lr=LR, init=INIT)
train_arms(config, DATA_DIR, SPLITS, OUT / "arms")
RUNS = comparison_runs(config, OUT / "arms")  # single-task, two-stage (formed from them), joint variants


# %%
# The table: `classseg compare --aggregate` (mean ± std over seeds), Markdown + LaTeX + CSV
from classseg.cli import main as classseg_cli

assert classseg_cli(["compare", *map(str, RUNS), "--out", str(OUT), "--name", "multitask", "--aggregate", "--overwrite",
                     "--caption", caption(config, SPLITS)]) == 0
table = pd.read_csv(OUT / "multitask.csv")
COLUMNS = ["model", "n_runs", "accuracy", "sensitivity", "specificity", "gate_auc", "auc", "dice_tumor_slices",
           "dice_per_patient", "hd95_detected_px", "train_minutes"]
display(table[[c for c in table.columns if c.split("_std")[0] in COLUMNS]].round(3))


# %%
# Mean ± std per arm (error bars: standard deviation over seeds)
from classseg.reporting.plotting import plot_mean_std

figure = plot_mean_std(table, ["accuracy", "dice_per_patient", "dice_tumor_slices"], OUT / "multitask.png",
                            title=caption(config, SPLITS))
display(Image(filename=str(figure)))


# %%
# The joint model (first seed) through the pipeline: verdict from its class head, mask from its decoder
import shutil

from classseg.data import link_patients, load_splits
from classseg.pipeline import main as run_pipeline

if ON == "test":
    shutil.rmtree(OUT / "test_patients", ignore_errors=True)  # links only: the data itself is never touched
    TEST_DIR = link_patients(DATA_DIR, load_splits(SPLITS), "test", OUT / "test_patients")
else:
    TEST_DIR = DATA_DIR
JOINT = next((r / "joint.keras" for r in RUNS if r.name.startswith("joint") and (r / "joint.keras").is_file()), None)
if JOINT is not None:
    shutil.rmtree(OUT / "pipeline_joint", ignore_errors=True)  # this notebook's own previous output
    assert run_pipeline(["--test-dir", str(TEST_DIR), "--out", str(OUT / "pipeline_joint"), "--joint", str(JOINT)]) == 0
    display(Markdown((OUT / "pipeline_joint" / "metrics.md").read_text()))


# %%
# Training curves of the first joint run (losses per task, loss weights, learning rate)
if JOINT is not None:
    display(Markdown(f"**{JOINT.parent.name}** ({IMG_SIZE} px, width {WIDTH}, {EPOCHS} epochs, split {SPLITS.name})"))
    display(Image(filename=str(JOINT.parent / "training_curves.png")))
print("run folder:", OUT.resolve())
