"""``classseg view PRED_DIR``: one self-contained HTML page to browse a predictions folder.

``PRED_DIR/viewer/index.html`` (or ``--out``): a table of patients (slices, slices called tumor, highest gate
probability and, with ground truth, Dice per patient and tumor slices missed), sortable by any column and sorted
worst first (lowest Dice per patient; without truth, most slices called tumor), and per patient its slices with
their overlays (the pipeline's ``overlays/``: predicted outline red, ground truth green), the call, the gate
probability and, with ground truth, the slice's Dice. Everything the page shows is inside it (data as JSON, the
script and style inline); the overlays are linked by relative paths, so the folder opens from disk, no server.

Figures with ground truth are those of :func:`classseg.evaluation.folder.evaluate_folder` (``classseg evaluate``).
"""

from __future__ import annotations

import csv
import html
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["viewer_data", "write_viewer"]


def _rows(pred_dir: Path) -> list[dict[str, str]]:
    path = pred_dir / "predictions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions.csv in the predictions folder")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def viewer_data(pred_dir: str | Path, truth_dir: str | Path | None = None, out: str | Path | None = None
                ) -> dict[str, Any]:
    """What the page shows: ``patients`` (each with its ``slices``), in worst-first order, and the facts above
    the table. Overlay paths are relative to ``out`` (default ``PRED_DIR/viewer``)."""
    pred_dir = Path(pred_dir)
    out = Path(out) if out is not None else pred_dir / "viewer"
    rows = _rows(pred_dir)
    scored: dict[str, dict[str, Any]] = {}
    per_patient: dict[str, float] = {}
    figures = None
    if truth_dir is not None:
        from classseg.evaluation.folder import evaluate_folder

        result = evaluate_folder(pred_dir, truth_dir)
        scored = {s["image"]: s for s in result["per_slice"]}
        per_patient = {p["patient_id"]: p["dice"] for p in result.get("per_patient", [])}
        figures = {k: result.get(k) for k in ("accuracy", "sensitivity", "specificity", "dice_tumor_slices",
                                              "dice_per_patient", "n_slices")}
    patients: dict[str, dict[str, Any]] = {}
    for row in rows:
        overlay = row.get("overlay_path") or ""
        link = Path(os.path.relpath(pred_dir / overlay, out)).as_posix() if overlay else ""
        truth = scored.get(row["image"])
        slice_ = {"image": row["image"], "overlay": link, "call": row.get("final_call", ""),
                  "gate_prob": _float(row.get("gate_prob")), "area": row.get("mask_area_px", ""),
                  "status": row.get("status", ""), "note": "; ".join(filter(None, (row.get("note"), row.get("error")))),
                  "dice": truth["dice"] if truth else None, "tumor": truth["tumor"] if truth else None}
        patient = patients.setdefault(row.get("patient") or Path(row["image"]).parent.as_posix(),
                                      {"slices": []})
        patient["slices"].append(slice_)
    listed = []
    for name, patient in patients.items():
        slices = patient["slices"]
        probs = [s["gate_prob"] for s in slices if s["gate_prob"] is not None]
        truth_known = [s for s in slices if s["tumor"] is not None]
        listed.append({
            "patient": name, "slices": slices, "n_slices": len(slices),
            "called_tumor": sum(s["call"] == "tumor" for s in slices),
            "errors": sum(s["status"] not in ("ok", "") for s in slices),
            "max_gate_prob": max(probs) if probs else None,
            "dice": per_patient.get(name),
            "tumor_slices": sum(bool(s["tumor"]) for s in truth_known) if truth_known else None,
            "missed": sum(bool(s["tumor"]) and s["call"] != "tumor" for s in truth_known) if truth_known else None})
    has_truth = any(p["dice"] is not None for p in listed)
    listed.sort(key=(lambda p: (p["dice"] if p["dice"] is not None else 2.0, p["patient"])) if has_truth
                else (lambda p: (-p["called_tumor"], p["patient"])))
    return {"pred_dir": str(pred_dir), "truth_dir": str(truth_dir) if truth_dir else None, "has_truth": has_truth,
            "figures": figures, "patients": listed}


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}
table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#eee;cursor:pointer;user-select:none}
td:first-child,th:first-child{text-align:left}
tr.selected td{background:#ffe9a8}
#slices{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:180px;font-size:12px}
figure img{width:180px;height:180px;object-fit:contain;background:#000;display:block;image-rendering:pixelated}
figure.tumor figcaption b{color:#c00}
.missing{width:180px;height:180px;background:#444;color:#ddd;display:flex;align-items:center;justify-content:center}
"""

_SCRIPT = """
const DATA = JSON.parse(document.getElementById('data').textContent);
const fmt = (v, d) => v === null || v === undefined ? '' : (typeof v === 'number' ? v.toFixed(d) : String(v));
const COLS = [['patient','patient',null],['n_slices','slices',0],['called_tumor','called tumor',0],
  ['max_gate_prob','max gate prob',3]].concat(DATA.has_truth ?
  [['dice','Dice per patient',3],['tumor_slices','tumor slices',0],['missed','missed',0]] : []).concat(
  [['errors','errors',0]]);
let order = DATA.patients.slice(), sortKey = null, sortUp = true, current = null;
function head() {
  const tr = document.createElement('tr');
  for (const [key, label] of COLS) {
    const th = document.createElement('th');
    th.textContent = label + (sortKey === key ? (sortUp ? ' \\u25b2' : ' \\u25bc') : '');
    th.dataset.key = key;
    th.onclick = () => { sortUp = sortKey === key ? !sortUp : true; sortKey = key; sortBy(); };
    tr.appendChild(th);
  }
  return tr;
}
function sortBy() {
  const k = sortKey, s = sortUp ? 1 : -1;
  order.sort((a, b) => {
    const x = a[k], y = b[k];
    if (x === y) return 0; if (x === null) return 1; if (y === null) return -1;
    return (x < y ? -1 : 1) * s;
  });
  table();
}
function table() {
  const t = document.getElementById('patients');
  t.innerHTML = '';
  t.appendChild(head());
  for (const p of order) {
    const tr = document.createElement('tr');
    tr.className = 'patient' + (p === current ? ' selected' : '');
    tr.dataset.patient = p.patient;
    for (const [key, , digits] of COLS) {
      const td = document.createElement('td');
      td.textContent = digits === null ? p[key] : fmt(p[key], digits);
      tr.appendChild(td);
    }
    tr.onclick = () => show(p);
    t.appendChild(tr);
  }
}
function show(p) {
  current = p;
  table();
  document.getElementById('title').textContent = p.patient + ': ' + p.n_slices + ' slices';
  const box = document.getElementById('slices');
  box.innerHTML = '';
  for (const s of p.slices) {
    const f = document.createElement('figure');
    f.className = 'slice' + (s.call === 'tumor' ? ' tumor' : '');
    if (s.overlay) {
      const img = document.createElement('img');
      img.className = 'overlay'; img.alt = s.image; img.src = s.overlay;
      img.onload = () => { img.dataset.loaded = '1'; };
      f.appendChild(img);
    } else {
      const d = document.createElement('div'); d.className = 'missing'; d.textContent = 'no overlay';
      f.appendChild(d);
    }
    const c = document.createElement('figcaption');
    c.innerHTML = '<b>' + (s.call || s.status) + '</b> ' + s.image.split('/').pop() +
      '<br>gate ' + fmt(s.gate_prob, 3) + (s.dice === null ? '' : ' \\u00b7 Dice ' + fmt(s.dice, 3)) +
      (s.tumor === null ? '' : (s.tumor ? ' \\u00b7 truth tumor' : '')) + (s.note ? '<br>' + s.note : '');
    f.appendChild(c);
    box.appendChild(f);
  }
}
table();
if (order.length) show(order[0]);
"""


def render(data: dict[str, Any]) -> str:
    """The page for :func:`viewer_data`'s ``data`` (one HTML string; ``</`` escaped inside the JSON)."""
    payload = json.dumps(data, allow_nan=False, default=str).replace("</", "<\\/")
    figures = data.get("figures")
    facts = (", ".join(f"{k.replace('_', ' ')} {v:.3f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                       for k, v in figures.items() if v is not None) if figures else "no ground truth given")
    order = "lowest Dice per patient first" if data["has_truth"] else "most slices called tumor first"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>classseg: {html.escape(data['pred_dir'])}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Predictions in {html.escape(data['pred_dir'])}</h1>
<p id="facts">{len(data['patients'])} patients; {html.escape(facts)}. Sorted {order}; click a column to sort,
a patient to see its slices (outline: prediction red, ground truth green).</p>
<table id="patients"></table>
<h2 id="title"></h2>
<div id="slices"></div>
<script type="application/json" id="data">{payload}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def _clean(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_viewer(pred_dir: str | Path, truth_dir: str | Path | None = None, out: str | Path | None = None,
                 overwrite: bool = False) -> Path:
    """Write ``index.html`` into ``out`` (default ``PRED_DIR/viewer``) atomically and return its path; an existing
    page is replaced only with ``overwrite`` (``FileExistsError`` otherwise)."""
    from classseg.utils.atomic import atomic_write_text

    out = Path(out) if out is not None else Path(pred_dir) / "viewer"
    page = out / "index.html"
    if page.exists() and not overwrite:
        raise FileExistsError(f"{page} already exists; pass --overwrite to replace it")
    data = _clean(viewer_data(pred_dir, truth_dir, out))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(page, render(data))
    return page
