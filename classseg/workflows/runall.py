"""``classseg run-all``: split -> phase 1 -> phase 2 -> phase 3 -> joint model -> report, on one split file.

Each stage writes into its own folder under the run folder and, when it has finished, a
``stage.json`` marker (the settings its results depend on, a token, wall time). A stage whose
marker exists with the same settings is not redone, so an interrupted run resumes where it
stopped. A finished stage with other settings (data folder, seed, epochs, ...) is refused with a
message naming each differing setting, before any work is done. Delete a stage folder to redo it;
the finished stages that read its results are then moved aside (``<stage>.stale-<time>``) and redone.

Before any work the split is fixed by a stated rule (:func:`split_rule`, written to ``split/split_rule.json``)
and checked for leakage against the split every starting model was trained on (``leakage_check.json``;
:func:`classseg.utils.guards.check_start_models`): a run whose val or test patients those weights trained or
chose on is refused with one line naming them (issue 18).
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from classseg.data.splits import link_patients
from classseg.models.names import IMAGENET_BACKBONES
from classseg.utils.atomic import sha256_file
from classseg.utils.jsonio import read_json, write_json
from classseg.utils.manifest import write_manifest

STAGES = ("split", "phase1", "phase2", "phase3", "joint", "report")
ALL_BACKBONES = IMAGENET_BACKBONES


#: ``weights`` / ``init`` value meaning "the shipped segmenter" (:func:`shipped_segmenter`).
SHIPPED = "shipped"


@dataclass
class RunAllProfile:
    """Settings of every stage. ``quick`` learns in minutes on a CPU by starting from the shipped models
    (in-domain transfer learning); ``paper`` uses the papers' settings (ImageNet backbones, seed 002's
    ResUNet recipe, seed 000's ResNet-50 joint model).

    - ``weights``: phase-1 backbone weights (``imagenet``, None, a file, or ``shipped`` for the in-domain
      backbones, frozen: ``resunet_encoder`` = the shipped segmenter's encoder, ``gate_encoder`` = the
      shipped gate CNN's; :func:`classseg.models.backbones.get_backbone`). In-domain backbones are fed what
      the card of the model they are cut from says (its ``normalization``, :func:`backbone_normalizations`).
    - ``init``: where phase 2 and a ``resunet`` joint model start (None = from scratch, ``shipped``, or a
      ResUNet segmenter ``.keras``); both are fed what the starting model's card says.
    - ``fractions`` / ``seed``: the held-out patients follow one rule fixed before any result was seen
      (:func:`split_rule`): the project's standard splitter :func:`classseg.data.split_patients` with the
      default fractions 0.70 / 0.15 / 0.15 and seed 0, kept whatever it gives. On the bundled 7-patient
      sample that is 5 train / 1 val / 1 test patients (test: TCGA_FG_A60K, val: TCGA_FG_8189). An
      earlier version used 0.45 / 0.15 / 0.40, chosen knowing the shipped models' per-patient figures on
      the sample; that choice was undone (issue 18).
    - Every run that starts from trained weights is checked for leakage before any work
      (:func:`classseg.utils.guards.check_start_models`): it is refused when one of its val or test patients
      was a train or val patient of those weights.
    """

    name: str = "quick"
    weights: str | None = SHIPPED
    init: str | None = SHIPPED
    seed: int = 0
    repeats: int = 1
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # classseg.data.split_patients' defaults
    backbones: tuple[str, ...] = ("resunet_encoder", "gate_encoder")
    cls_img_size: int = 128
    cls_head: str = "paper"
    cls_epochs: int = 20
    seg_recipe: str = "fast"
    seg_img_size: int = 128
    seg_epochs: int = 30
    seg_minutes: float | None = 2.0
    seg_lr: float | None = 5e-4  # fine-tuning from ``init``; None = the recipe's
    seg_batch_size: int = 32
    joint_architecture: str = "resunet"
    joint_img_size: int = 128
    joint_epochs: int = 8
    joint_batch_size: int = 32
    joint_lr: float = 5e-4
    joint_augment: bool = True
    # the starting segmenter's recipe (robust, FLAIR for missing sequences on half the slices): with the lighter
    # "recipe" set the joint model forgot the FLAIR-only patient (test Dice per patient 0.19 against 0.68)
    joint_augment_profile: str = "robust"
    joint_missing_sequence_p: float | None = 0.5
    joint_select_gate: bool = True  # class threshold and gate rule chosen on val, as for the two-stage gate
    extra: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, RunAllProfile] = {
    "quick": RunAllProfile(),
    "paper": RunAllProfile(name="paper", weights="imagenet", init=None, repeats=3, fractions=(0.7, 0.15, 0.15),
                           backbones=ALL_BACKBONES, cls_img_size=256, cls_epochs=20, seg_recipe="paper",
                           seg_img_size=256, seg_epochs=30, seg_minutes=None, seg_lr=None, seg_batch_size=16,
                           joint_architecture="resnet50_unet", joint_img_size=224, joint_epochs=25,
                           joint_batch_size=16, joint_lr=1e-4, joint_augment=False,
                           joint_select_gate=False),
}


def shipped_segmenter() -> Path:
    """The shipped segmenter (:func:`classseg.utils.paths.shipped_model`); its ``FileNotFoundError`` says what to do."""
    from classseg.utils.paths import shipped_model

    return shipped_model("segmenter.keras", hint=" (the quick profile starts from it; or pass --init none "
                                                 "--weights none)")


def resolve_model(value: str | None) -> str | None:
    """``shipped`` -> the shipped segmenter's absolute path; None / ``none`` -> None; others unchanged."""
    from classseg.models.names import parse_weights

    value = parse_weights(value)
    return str(shipped_segmenter().resolve()) if value == SHIPPED else value


def split_rule(profile: RunAllProfile, splits_path: str | Path | None = None) -> dict[str, Any]:
    """How the held-out patients are chosen, stated before any result exists (issue 18): a given split
    file, or :func:`classseg.data.split_patients` with the profile's fractions and seed, kept as it comes."""
    if splits_path:
        return {"source": "file", "splits_path": str(splits_path),
                "rule": f"the split file {splits_path}, given with --splits"}
    fractions = ", ".join(f"{f:.2f}" for f in profile.fractions)
    return {"source": "computed", "fractions": list(profile.fractions), "seed": profile.seed,
            "rule": f"classseg.data.split_patients(fractions=({fractions}), seed={profile.seed}): patient counts "
                    "rounded from the fractions (at least one val and one test patient), of 2000 seeded random "
                    "assignments the one whose tumor-slice shares are closest to the whole set's; fixed before "
                    "any result was seen and kept whatever it gives"}


def start_normalization(model_path: str | Path | None) -> str:
    """The input a starting model expects: its card's ``normalization`` (``raw`` without a card)."""
    from classseg.models.card import read_card

    card = read_card(model_path) if model_path else None
    return card.normalization if card is not None else "raw"


def _in_domain_source(name: str, weights: str | None) -> str | None:
    """The ``.keras`` model an in-domain phase-1 backbone is cut from (None for ImageNet / random ones)."""
    from classseg.models.backbones import get_spec

    spec = get_spec(name)
    if not spec.shipped_model or weights is None:
        return None
    if weights == SHIPPED:
        from classseg.utils.paths import shipped_model

        return str(shipped_model(spec.shipped_model).resolve())
    return str(weights) if str(weights).endswith(".keras") else None


def backbone_normalizations(profile: RunAllProfile) -> dict[str, str]:
    """Phase-1 backbone -> the input its weights expect: the card's ``normalization`` of the model an
    in-domain backbone is cut from; ``raw`` for ImageNet / random backbones (they carry their preprocessing)."""
    from classseg.models.backbones import get_spec

    return {get_spec(name).name: start_normalization(_in_domain_source(name, profile.weights))
            for name in profile.backbones}


def starting_models(profile: RunAllProfile) -> list[str]:
    """Every trained model a run starts from: the in-domain phase-1 backbones' models and ``init`` (phase 2,
    a ``resunet`` joint model). ImageNet weights hold no patient; they are not listed."""
    models = [_in_domain_source(name, profile.weights) for name in profile.backbones]
    models.append(resolve_model(profile.init))
    return list(dict.fromkeys(m for m in models if m))


#: What to do when the leakage guard refuses a run-all.
LEAKAGE_HINT = ("pass --splits FILE whose val and test patients the starting weights never trained or chose on "
                "(for the shipped models: patients outside the train/val of data/splits/kaggle_3m_seed0.csv, "
                "e.g. the bundled sample), or start from scratch with --init none --weights none")


def get_profile(name: str, **overrides: Any) -> RunAllProfile:
    """A named profile with some fields overridden (None values are ignored)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})


class StageSettingsError(ValueError):
    """A finished stage in the run folder was made with other settings than this run asks for."""


#: The stages whose results each stage reads; a stage redone makes those after it stale.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "split": (),
    "phase1": ("split",),
    "phase2": ("split",),
    "phase3": ("split", "phase1", "phase2"),
    "joint": ("split",),
    "report": ("split", "phase1", "phase2", "phase3", "joint"),
}


def _plain(value: Any) -> Any:
    """JSON round trip (tuples -> lists) so settings compare equal to what a marker recorded."""
    return json.loads(json.dumps(value, default=str))


def stage_settings(profile: RunAllProfile, data_dir: str | Path,
                   splits_path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The settings each stage's results depend on (recorded in its ``stage.json`` and compared on reuse)."""
    common = {"data_dir": str(Path(data_dir).resolve()), "seed": profile.seed}
    init = resolve_model(profile.init)
    init_sha = {"init_sha256": sha256_file(init)[:16]} if init and Path(init).is_file() else {}
    weights_sha = {}
    if profile.weights == SHIPPED:  # the in-domain backbones' files: a replaced shipped model redoes phase 1
        from classseg.utils.paths import default_models_dir

        shipped = sorted(default_models_dir().glob("*.keras"))
        weights_sha = {"weights_sha256": {f.name: sha256_file(f)[:16] for f in shipped}}
    extra = {"extra": profile.extra} if profile.extra else {}
    # the input each starting model expects (its card): a retrained shipped model with another one redoes the stage
    in_domain = profile.weights == SHIPPED or str(profile.weights or "").endswith(".keras")
    cls_input = {"input_normalization": backbone_normalizations(profile)} if in_domain else {}
    init_input = {"init_normalization": start_normalization(init)} if init else {}
    split = {**common, "fractions": profile.fractions,
             "splits_path": str(Path(splits_path).resolve()) if splits_path else None,
             "splits_sha256": sha256_file(splits_path) if splits_path and Path(splits_path).is_file() else None}
    settings = {
        "split": split,
        "phase1": {**common, "weights": profile.weights, **weights_sha, "repeats": profile.repeats,
                   "backbones": profile.backbones,
                   "cls_img_size": profile.cls_img_size, "cls_head": profile.cls_head,
                   "cls_epochs": profile.cls_epochs, **cls_input, **extra},
        "phase2": {**common, "init": init, **init_sha, **init_input, "seg_recipe": profile.seg_recipe,
                   "seg_img_size": profile.seg_img_size, "seg_epochs": profile.seg_epochs,
                   "seg_minutes": profile.seg_minutes, "seg_lr": profile.seg_lr,
                   "seg_batch_size": profile.seg_batch_size, **extra},
        "phase3": {"data_dir": common["data_dir"]},
        "joint": {**common, "weights": profile.weights if profile.joint_architecture == "resnet50_unet" else None,
                  "init": init if profile.joint_architecture == "resunet" else None, **init_sha,
                  **(init_input if profile.joint_architecture == "resunet" else {}),
                  "joint_architecture": profile.joint_architecture, "joint_img_size": profile.joint_img_size,
                  "joint_epochs": profile.joint_epochs, "joint_batch_size": profile.joint_batch_size,
                  "joint_lr": profile.joint_lr, "joint_augment": profile.joint_augment,
                  "joint_augment_profile": profile.joint_augment_profile,
                  "joint_missing_sequence_p": profile.joint_missing_sequence_p,
                  "joint_select_gate": profile.joint_select_gate, **extra},
        "report": {"data_dir": common["data_dir"]},
    }
    return {name: _plain(value) for name, value in settings.items()}


def settings_diff(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``"seed: 0 (finished) vs 7 (this run)"`` for every setting that differs; missing = 'not recorded'."""
    diffs = []
    for key in wanted:
        if key not in recorded:
            diffs.append(f"{key}: not recorded (finished) vs {wanted[key]!r} (this run)")
        elif recorded[key] != wanted[key]:
            diffs.append(f"{key}: {recorded[key]!r} (finished) vs {wanted[key]!r} (this run)")
    return diffs


def _move_aside(folder: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{folder.name}.stale-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.stale-{stamp}-{n}")
    folder.rename(target)
    return target


def check_stages(out: Path, settings: dict[str, dict[str, Any]]) -> None:
    """Refuse (:class:`StageSettingsError`) when a finished stage in ``out`` recorded other settings."""
    for name in STAGES:
        marker = out / name / "stage.json"
        if not marker.is_file():
            continue
        try:
            recorded = read_json(marker).get("settings") or {}
        except (ValueError, OSError, AttributeError) as err:
            raise StageSettingsError(f"{marker}: unreadable stage marker ({err}); delete {out / name} to redo "
                                     "the stage") from None
        diffs = settings_diff(recorded, settings[name])
        if diffs:
            raise StageSettingsError(
                f"{out}/{name} was finished with other settings: {'; '.join(diffs)}. Nothing was changed; "
                f"use another --out, or delete {out / name} and the stages after it to redo them")


def _stage(out: Path, name: str, settings: dict[str, Any], work: Callable[[Path], Any], log: Callable) -> bool:
    """Run ``work(stage_dir)`` unless the stage finished earlier with the same settings and inputs.

    A finished stage with other settings raises :class:`StageSettingsError`. A finished stage
    whose upstream stages were redone since (their marker ``token`` changed) is stale: its folder
    is moved aside to ``<name>.stale-<time>`` and the stage runs again. Returns True when it ran.
    """
    folder = out / name
    marker = folder / "stage.json"
    upstream = {}
    for dep in UPSTREAM[name]:
        dep_marker = read_json(out / dep / "stage.json")
        upstream[dep] = dep_marker.get("token")
    if marker.exists():
        recorded = read_json(marker)
        diffs = settings_diff(recorded.get("settings") or {}, settings)
        if diffs:
            raise StageSettingsError(f"{folder} was finished with other settings: {'; '.join(diffs)}; "
                                     f"use another --out, or delete {folder} to redo it")
        stale = [dep for dep, token in upstream.items()
                 if "upstream" in recorded and recorded["upstream"].get(dep) != token]
        if not stale:
            log(f"[{name}] done earlier with the same settings ({marker}); skipping")
            return False
        moved = _move_aside(folder)
        log(f"[{name}] stale: {', '.join(stale)} redone since it finished; old results moved to {moved}")
    folder.mkdir(parents=True, exist_ok=True)
    log(f"[{name}] running ...")
    start = time.perf_counter()
    work(folder)
    seconds = round(time.perf_counter() - start, 1)
    write_json(marker, {"stage": name, "seconds": seconds, "settings": settings, "upstream": upstream,
                        "token": secrets.token_hex(8),
                        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    log(f"[{name}] finished in {seconds:.0f} s")
    return True


def score_start_model(model_path: str | Path, data_dir: Path, split_file: Path, out_json: Path) -> dict[str, Any]:
    """Test :class:`~classseg.evaluation.Scores` of a segmenter as it was before fine-tuning, delivered as its
    own card says (input, flips, threshold, post-processing, per-patient 3D filter: what the pipeline gives),
    written to ``out_json``: the baseline a quick run improves on."""
    from dataclasses import replace as dc_replace

    from classseg import data as cdata
    from classseg.evaluation.scores import read_truths
    from classseg.training.segmenter import SegmenterConfig, evaluate_segmenter, predict_with_card

    frame = cdata.resolve_splits(cdata.discover(data_dir), split_file)
    test, probs, pp, pp3d = predict_with_card(model_path, frame[frame["split"] == "test"].reset_index(drop=True))
    config = dc_replace(SegmenterConfig(), threshold=pp.threshold, postprocess=pp)
    scores = evaluate_segmenter(probs, test.masks, test.frame["patient_id"].to_numpy(), config,
                                truths=read_truths(test.frame["mask_path"]), config_3d=pp3d,
                                order=test.frame["slice"].to_numpy())
    write_json(out_json, {"model": str(model_path), "what": "the starting model before fine-tuning, test split",
                          **scores})
    return scores


def choose_phase3_gate(gate_path: Path, segmenter_path: Path, data_dir: Path, split_file: Path,
                       folder: Path) -> dict[str, Any]:
    """The gate threshold and rule of phase 3, chosen on val (:func:`classseg.training.selection.choose_gate`):
    the phase-1 gate's val probabilities (its ``predictions.csv``) against the phase-2 segmenter's "mask
    non-empty" on the same slices; the gate is used only where it beats that on val. Writes
    ``gate_selection.csv`` / ``.json`` into ``folder``."""
    import pandas as pd

    from classseg import data as cdata
    from classseg.training.gate import segmenter_delivery
    from classseg.training.selection import choose_gate
    from classseg.utils.atomic import atomic_to_csv

    probs = pd.read_csv(gate_path.parent / "predictions.csv")
    probs = probs[probs["split"] == "val"]
    frame = cdata.resolve_splits(cdata.discover(data_dir), split_file)
    val = frame[frame["split"] == "val"].reset_index(drop=True)
    val = val.merge(probs[["patient_id", "slice", "p_tumor"]], on=["patient_id", "slice"], how="left",
                    validate="one_to_one")
    if val["p_tumor"].isna().any():
        raise ValueError(f"{gate_path.parent / 'predictions.csv'} lacks val slices of {split_file}")
    maps = segmenter_delivery(segmenter_path, val)  # the rule's own delivery per threshold (3D filter included)
    choice, table = choose_gate(val["tumor"].astype(int).to_numpy(), val["p_tumor"].to_numpy(), maps)
    atomic_to_csv(table, folder / "gate_selection.csv", index=False)
    write_json(folder / "gate_selection.json", {"gate": str(gate_path), "segmenter": str(segmenter_path), **choice})
    return choice


def phase2_config(profile: RunAllProfile) -> Any:
    """The phase-2 :class:`~classseg.training.segmenter.SegmenterConfig`: the paper profile trains seed 002's
    recipe; the quick one fine-tunes ``init`` (the shipped segmenter) with the fast recipe, fed what the
    starting model was trained on (its card's ``normalization``)."""
    from classseg.training.segmenter import recipe_config

    lr = {"lr": profile.seg_lr} if profile.seg_lr is not None else {}
    init = resolve_model(profile.init)
    inputs = {"normalization": start_normalization(init)} if init else {}
    return recipe_config(profile.seg_recipe, img_size=profile.seg_img_size, epochs=profile.seg_epochs,
                         minutes=profile.seg_minutes, batch_size=profile.seg_batch_size, seed=profile.seed,
                         init=init, **lr, **inputs)


def joint_config(profile: RunAllProfile) -> Any:
    """The joint stage's :class:`~classseg.training.joint.JointConfig`; a ``resunet`` joint model starts from
    ``init`` and is fed what that model's card says (``normalization``)."""
    from classseg.training.joint import JointConfig

    resunet = profile.joint_architecture == "resunet"
    init = resolve_model(profile.init) if resunet else None
    return JointConfig(architecture=profile.joint_architecture,
                       weights=None if resunet else resolve_model(profile.weights),
                       init=init, normalization=start_normalization(init) if init else None,
                       img_size=profile.joint_img_size, epochs=profile.joint_epochs,
                       batch_size=profile.joint_batch_size, lr=profile.joint_lr, augment=profile.joint_augment,
                       augment_profile=profile.joint_augment_profile,
                       missing_sequence_p=profile.joint_missing_sequence_p,
                       select_gate=profile.joint_select_gate, seed=profile.seed)


def train_phase1(config: Any, data_dir: str | Path, split_file: str | Path, out_dir: str | Path,
                 normalizations: dict[str, str], strategy: Any = None) -> Any:
    """Phase 1 (:func:`classseg.training.classifiers.train_classifiers`), each backbone fed the input its
    weights expect (``normalizations``, :func:`backbone_normalizations`; a card beside each non-raw
    ``classifier.keras`` tells phase 3's pipeline the same)."""
    from dataclasses import replace as dc_replace

    from classseg.training.classifiers import train_classifiers

    return train_classifiers(dc_replace(config, input_normalization=dict(normalizations)), data_dir, split_file,
                             out_dir, strategy=strategy)


def run_all(data_dir: str | Path, out_dir: str | Path, profile: RunAllProfile,
            splits_path: str | Path | None = None, strategy: Any = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage on one split file; return a summary (stage folders, seconds, headline figures)."""
    from classseg import data as cdata
    from classseg.utils.guards import check_start_models

    out = Path(out_dir)
    data_dir = Path(data_dir)
    settings = asdict(profile)
    per_stage = stage_settings(profile, data_dir, splits_path)
    check_stages(out, per_stage)  # before any work: a reused folder with other settings is refused
    split_file = out / "split" / "splits.csv"
    rule = split_rule(profile, splits_path)
    if (out / "split" / "stage.json").is_file() and split_file.is_file():
        splits = cdata.load_splits(split_file)  # finished earlier with the same settings
    elif splits_path:
        splits = cdata.load_splits(splits_path)
        # before any work: a split file listing patients the data lacks is refused (or, allowed, recorded)
        rule["missing_listed_patients"] = cdata.check_listed_patients(cdata.discover(data_dir), splits,
                                                                      source=str(splits_path))
    else:
        splits = cdata.split_patients(cdata.discover(data_dir), profile.fractions, seed=profile.seed)
    # the leakage guard, before any folder is made: no val/test patient may be a train/val patient of the
    # weights this run starts from (issue 18); LeakageError names them
    leakage = {"starting_models": check_start_models(splits, starting_models(profile), LEAKAGE_HINT)}
    leakage["checked"] = all(r["checked"] for r in leakage["starting_models"])
    out.mkdir(parents=True, exist_ok=True)
    for record in leakage["starting_models"]:
        if not record["checked"]:
            log(f"[split] leakage NOT checked for {record['model']}: {record['why']}")

    def make_split(folder: Path) -> None:
        cdata.save_splits(splits, folder / "splits.csv")
        write_json(folder / "split_rule.json", rule)

    _stage(out, "split", per_stage["split"], make_split, log)
    write_json(out / "leakage_check.json", {**leakage, "split_file": str(split_file),
                                            "rule": "refused when a val/test patient of this run was a "
                                                    "train/val patient of a starting model's split"})

    def phase1(folder: Path) -> None:
        from classseg.training.classifiers import ClassifierConfig

        config = ClassifierConfig(backbones=tuple(profile.backbones), weights=profile.weights,
                                  img_size=profile.cls_img_size, head=profile.cls_head, epochs=profile.cls_epochs,
                                  repeats=profile.repeats, seed=profile.seed)
        train_phase1(config, data_dir, split_file, folder, backbone_normalizations(profile), strategy=strategy)

    _stage(out, "phase1", per_stage["phase1"], phase1, log)

    def phase2(folder: Path) -> None:
        from classseg.training.segmenter import train_segmenter

        config = phase2_config(profile)
        train_segmenter(config, data_dir, split_file, folder, strategy=strategy)
        if config.init:  # what fine-tuning added: the starting model scored the same way on the same test slices
            score_start_model(config.init, data_dir, split_file, folder / "start_model_test.json")

    _stage(out, "phase2", per_stage["phase2"], phase2, log)

    def phase3(folder: Path) -> None:
        from classseg.pipeline.folder import FolderPredictionConfig, predict_folder
        from classseg.training.classifiers import gate_model_path

        gate_path = gate_model_path(out / "phase1" / "results.json")
        choice = choose_phase3_gate(gate_path, out / "phase2" / "segmenter.keras", data_dir, split_file, folder)
        predictions = folder / "predictions"
        if predictions.exists():  # left by an interrupted attempt (this stage has no marker): start afresh
            shutil.rmtree(predictions)
        test_dir = link_patients(data_dir, cdata.load_splits(split_file), "test", folder / "test_patients",
                                 overwrite=True)  # its own folder of links, remade on a resume
        config = FolderPredictionConfig(test_dir=Path(test_dir), out=predictions, classifier=Path(gate_path),
                                        segmenter=out / "phase2" / "segmenter.keras",
                                        threshold=float(choice["threshold"] or 0.5), gate_rule=choice["rule"])
        # Ctrl-C: FolderInterrupted is a KeyboardInterrupt, so run-all says in one line what was finished
        code = predict_folder(config).announce()
        if code != 0:
            raise RuntimeError(f"phase 3 pipeline failed with exit code {code}")

    _stage(out, "phase3", per_stage["phase3"], phase3, log)

    def joint(folder: Path) -> None:
        from classseg.training.joint import train_joint

        train_joint(joint_config(profile), data_dir, split_file, folder, strategy=strategy)

    _stage(out, "joint", per_stage["joint"], joint, log)

    def report(folder: Path) -> None:
        from classseg.reporting.report import write_report

        write_report(out, folder)

    _stage(out, "report", per_stage["report"], report, log)
    write_manifest(out, command="run-all", profile=settings, data_dir=str(data_dir), split_file=str(split_file))
    summary = {name: read_json(out / name / "stage.json") for name in STAGES if (out / name / "stage.json").exists()}
    log(json.dumps({k: v["seconds"] for k, v in summary.items()}))
    return summary
