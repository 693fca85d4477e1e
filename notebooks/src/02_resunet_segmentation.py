# Source of notebooks/02_resunet_segmentation.ipynb (jupytext percent format: `# %%` starts a cell).
# Edit here, then run `python notebooks/build_notebooks.py`; `%` magics are written as `# %` comments.

# %% [markdown]
# # 02 · Phase 2 of Class-Seg: ResUNet segmentation
#
# Reproduces phase 2 of **seed 002** (N. Duong-Trung, D. N. Le Ha, H. X. Huynh, "Classification-Segmentation
# Pipeline for MRI via Transfer Learning and Residual Networks"): a ResUNet trained **from scratch** on the tumor
# slices with the Focal Tversky
# loss (Abraham & Khan, ISBI 2019), evaluated with Dice, IoU and HD95 per slice and Dice per patient; the validation
# soft Tversky index is the figure the paper reports (0.89). Shown: the metrics, the training curves and the examples
# figure (the paper's Figure 4: image, ground truth, prediction) of test patients
# (`classseg.training.segmenter.train_segmenter`).
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
#
# The ResUNet has no pretrained weights (the paper trains it from scratch), so this notebook has no `WEIGHTS`.


# %% tags=["parameters"]
# Parameters (tagged "parameters": papermill / CI insert a cell right after this one to override them)
INSTALL = True  # install classseg: from this checkout (../pyproject.toml), else from SOURCE
SOURCE = None  # not in a checkout and not installed: what pip installs classseg from (a path, wheel or git URL)
DATA_DIR = None  # None: the full Kaggle dataset when credentials exist, else the bundled 7-patient sample
SPLITS = None  # patient-level split CSV (patient_id,split); None: computed (70/15/15, stratified) with SEED
SEED = 0  # seed of a computed split and of the ResUNet's training
OUT_DIR = "runs/02_resunet_segmentation"
IMG_SIZE = 256  # seed 002
EPOCHS = 30  # upper bound: early stopping (patience 20) on validation Dice
BATCH_SIZE = 16
LOSS = "focal_tversky"  # seed 002 (eq. 3-4); also "tversky", "dice", "bce_dice"
AUGMENT = True


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
# Phase 2: ResUNet from scratch on the train patients' tumor slices; best epoch on validation Dice
# (seed 002's recipe, `recipe_config("paper")`; the shipped segmenter uses the "fast" recipe, the default)
from classseg.training.segmenter import recipe_config, train_segmenter

config = recipe_config("paper", img_size=IMG_SIZE, epochs=EPOCHS, batch_size=BATCH_SIZE, loss=LOSS, augment=AUGMENT,
                       seed=SEED)
RUN = OUT / "segmenter"
metrics = train_segmenter(config, DATA_DIR, SPLITS, RUN)
LABEL = (f"ResUNet from scratch, {IMG_SIZE} px, {metrics['epochs_run']} of {EPOCHS} epochs (best "
         f"{metrics['best_epoch']}), loss {LOSS}, seed {SEED}, split {SPLITS.name}")


# %%
# Metrics (test and validation) and volume Dice of each test patient
display(Markdown((RUN / "metrics.md").read_text()))
display(pd.DataFrame(metrics["per_patient"]).round(4))


# %%
# Training curves and examples (seed 002, Figure 4) of test slices with tumor
display(Markdown(f"**Training curves and test examples** ({LABEL})"))
display(Image(filename=str(RUN / "training_curves.png")), Image(filename=str(RUN / "examples.png")))
print("run folder:", RUN.resolve())
