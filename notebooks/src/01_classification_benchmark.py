# Source of notebooks/01_classification_benchmark.ipynb (jupytext percent format: `# %%` starts a cell).
# Edit here, then run `python notebooks/build_notebooks.py`; `%` magics are written as `# %` comments.

# %% [markdown]
# # 01 · Phase 1 of Class-Seg: frozen-backbone classifier benchmark
#
# Reproduces phase 1 of **seed 002** (N. Duong-Trung, D. N. Le Ha, H. X. Huynh, "Classification-Segmentation
# Pipeline for MRI via Transfer Learning and Residual Networks"): five ImageNet backbones (ResNet50, ResNet50V2,
# InceptionResNetV2,
# EfficientNetB0, MobileNetV2), frozen, each with a trainable dense head (Figure 2), trained with categorical
# cross-entropy on a patient-level 70/15/15 split — the benchmark table (Table I) and the confusion matrix and ROC
# curve of the best backbone. The best backbone (the gate, "model 1") is chosen on the **validation** split; every
# figure and table is on the **test** split (`classseg.training.classifiers.train_classifiers`).
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
SEED = 0  # seed of a computed split and of the training (repeats: SEED, SEED + 1, ...)
OUT_DIR = "runs/01_classification_benchmark"
WEIGHTS = "imagenet"  # "imagenet" (paper), "none" (random init: offline / CI) or a weights file
IMG_SIZE = 256  # seed 002
EPOCHS = 20  # upper bound: early stopping (patience 5) on the validation loss
BATCH_SIZE = 32
BACKBONES = "resnet50,resnet50v2,inceptionresnetv2,efficientnetb0,mobilenetv2"  # seed 002, Table I
HEAD = "paper"  # "paper": Dense 1024-1024-1024-256 + dropout 0.3 (Figure 2); "gap": pooling + softmax only
REPEATS = 1  # the paper averages 3 runs


# %% include: _install.py


# %%
# Accelerator check (Colab: Runtime > Change runtime type > GPU)
from classseg.workflows.notebook import check_accelerator

env = check_accelerator()


# %%
# Data: the full Kaggle dataset when credentials exist (downloaded once, reused), else the bundled sample
from IPython.display import Image, Markdown, display

from classseg.workflows.notebook import load_data

DATA_DIR, slices = load_data(DATA_DIR)


# %%
# One patient-level split file for every stage (docs/design.md, "Splits")
from classseg.workflows.notebook import prepare_split

OUT, SPLITS = prepare_split(slices, OUT_DIR, SPLITS, SEED)


# %%
# Phase 1: every backbone frozen (features cached once), head trained; gate chosen on validation
from classseg.training.classifiers import ClassifierConfig, train_classifiers
from classseg.utils.jsonio import read_json

weights = None if str(WEIGHTS).lower() == "none" else WEIGHTS  # "none" = random initialisation
config = ClassifierConfig(backbones=tuple(b.strip() for b in BACKBONES.split(",") if b.strip()), weights=weights,
                          img_size=IMG_SIZE, head=HEAD, epochs=EPOCHS, batch_size=BATCH_SIZE, repeats=REPEATS,
                          seed=SEED)
RUN = OUT / "classifiers"
results = train_classifiers(config, DATA_DIR, SPLITS, RUN)
gate = read_json(RUN / "results.json")["gate"]
LABEL = (f"weights={weights or 'none'}, {IMG_SIZE} px, head {HEAD}, epochs<={EPOCHS}, repeats {REPEATS}, "
         f"seed {SEED}, split {SPLITS.name}")


# %%
# Benchmark table (seed 002, Table I), test split
display(Markdown(f"**Phase 1, test split** ({LABEL}). Gate chosen on validation: **{gate['backbone']}**, "
                 f"threshold {gate['threshold']:.3f} for sensitivity >= {gate['target_sensitivity']} on val."))
display(results.round(4))


# %%
# Confusion matrix and ROC curve of the best backbone (the gate), test split
best = RUN / gate["backbone"]
display(Markdown(f"**{gate['backbone']}**, test split ({LABEL})"))
display(Image(filename=str(best / "confusion_matrix.png")), Image(filename=str(best / "roc.png")))
print("run folder:", RUN.resolve())
