"""A batch at a glance: one self-contained HTML page (images embedded, no network, no external script)
that a physicist scrolls before trusting 50 automatic segmentations.

Per case: three orthogonal slices through the segmented structures with their outlines, the volume table
(with ``doubt`` and ``flags`` when the run wrote them) and how the case was run (model, device, time).
On top: one row per case with its flag count and volumes, a cell outlined when the volume lies far from
the batch's median (robust z-score over 3.5: median and MAD across cases), sortable by any column
(flag count first). The page records script errors in ``#js-errors`` and sets ``data-ready`` on
``<body>`` once its script ran, so a browser test can tell a page that works from one that merely loads.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from headseg.errors import InputError
from headseg.geometry import Volume, patient_axes
from headseg.paths import PathLike

__all__ = ["ReportCase", "collect_cases", "render_report", "write_report", "OUTLIER_Z"]


OUTLIER_Z = 3.5


@dataclass
class ReportCase:
    name: str
    rows: List[Dict[str, str]]  # the case's volume CSV rows
    segmentation: Optional[Path] = None
    run: Dict[str, Any] = field(default_factory=dict)  # <case>_run.json: input, model, device, seconds, notes
    thumbnails: List[str] = field(default_factory=list)  # base64 PNGs (axial, coronal, sagittal)
    legend: str = ""  # HTML: the colour, key and name of each structure in the pictures

    @property
    def flag_count(self) -> int:
        return sum(len([f for f in (r.get("flags") or "").split(";") if f]) for r in self.rows)


def _read_rows(path: Path) -> List[Dict[str, str]]:
    """A volume CSV's rows, each with its ``key`` (joined from structure and side in older files); a file
    that is not such a table is refused with a sentence naming it."""
    def refuse(why: str) -> InputError:
        return InputError(f"{path} is not a HeadSeg volume table ({why}). Move it out of the folder, or segment "
                          "the case again.")

    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = list(reader.fieldnames or ())
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise refuse(str(exc)) from None
    missing = [c for c in ("structure", "side", "volume_cm3") if c not in columns]
    if missing:
        raise refuse(f"no column {', '.join(missing)}")
    for n, r in enumerate(rows, start=2):
        try:
            float(r["volume_cm3"])
        except (TypeError, ValueError):
            raise refuse(f"line {n}: volume_cm3 {r['volume_cm3']!r} is not a number") from None
    for r in rows:
        if not r.get("key"):
            r["key"] = f"{r['structure']}_{r['side']}" if r.get("side") else r["structure"]
    return rows


def collect_cases(results_dir: PathLike) -> List[ReportCase]:
    """Every case of a ``headseg segment`` output folder (``<case>_volumes.csv`` + ``<case>.seg.nrrd``)."""
    folder = Path(results_dir)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give the output folder of 'headseg segment'.")
    cases = []
    for csv_path in sorted(folder.glob("*_volumes.csv")):
        name = csv_path.name[: -len("_volumes.csv")]
        seg = folder / f"{name}.seg.nrrd"
        run_path = folder / f"{name}_run.json"
        run = _read_run_record(run_path) if run_path.is_file() else {}
        cases.append(ReportCase(name, _read_rows(csv_path), seg if seg.is_file() else None, run))
    if not cases:
        raise InputError(f"{folder} holds no <case>_volumes.csv; run 'headseg segment ... -o {folder}' first.")
    return cases


def _read_run_record(path: Path) -> Dict[str, Any]:
    """``<case>_run.json`` with the fields the page shows checked; a damaged one is refused with a sentence."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path} is not a readable run record ({exc}). Move it out of the folder, or segment the "
                         "case again.") from None
    problems = [] if isinstance(run, dict) else ["it is not a JSON object"]
    if not problems:
        if "seconds" in run and (isinstance(run["seconds"], bool) or not isinstance(run["seconds"], (int, float))):
            problems.append("seconds is not a number")
        if not isinstance(run.get("notes") or [], list):
            problems.append("notes is not a list")
    if problems:
        raise InputError(f"{path} is not a HeadSeg run record ({'; '.join(problems)}). Move it out of the folder, or "
                         "segment the case again.")
    return run


def write_run_record(path: PathLike, case: Any, package: Any, result: Any, notes: Optional[Sequence[str]] = None,
                     patient: Optional[str] = None) -> Path:
    """``<case>_run.json``: how a case was segmented (input, model and its weights' SHA-256, device, time,
    notes, flags, the hashed PatientID), so that a report, ``compare`` or an audit can say it later without
    the console output. ``notes``: every warning of the case (default: the result's own)."""
    import datetime

    from headseg import __version__
    from headseg.io.files import write_atomically

    flags = {key: q.flags for key, q in (result.quality or {}).items() if q.flags}
    record = {"case": case.name, "input": str(Path(case.path).resolve()), "model": package.name,
              "model_synthetic": package.card.synthetic, "device": result.device,
              "model_sha256": package.card.weights.sha256, "patient_id_sha256": patient,
              "test_time_augmentation": bool(getattr(result, "tta", False)),
              "seconds": round(float(result.seconds), 2), "notes": list(result.notes if notes is None else notes),
              "flags": flags,
              "headseg": __version__,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    text = json.dumps(record, indent=1) + "\n"
    return write_atomically(Path(path), lambda t: t.write_text(text, encoding="utf-8"), overwrite=True)


# -- pictures ------------------------------------------------------------------------------------------
def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# Each view as radiology viewers show it: axial from the feet, coronal from the front, sagittal from the
# patient's left; the marks name the patient's side at each edge (left, right, top, bottom of the picture).
_VIEWS = (("axial", "from the feet", ("R", "L", "A", "P")),
          ("coronal", "from the front", ("R", "L", "H", "F")),
          ("sagittal", "from the left", ("A", "P", "H", "F")))


def _view_cuts(centre: np.ndarray, lo: np.ndarray, hi: np.ndarray, spacing: Sequence[float]):
    """(cut, aspect) per view of an array in :func:`patient_axes` order (head, back, left)."""
    s, p, left = spacing
    return [
        (lambda a: a[centre[0], lo[1]:hi[1], lo[2]:hi[2]], p / left),
        (lambda a: a[lo[0]:hi[0], centre[1], lo[2]:hi[2]][::-1], s / left),
        (lambda a: a[lo[0]:hi[0], lo[1]:hi[1], centre[2]][::-1], s / p),
    ]


def _crop(labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The slice with the most structure in it along each axis, and a box around all structures."""
    fg = labels > 0
    if not fg.any():
        return np.asarray(labels.shape) // 2, np.zeros(3, int), np.asarray(labels.shape)
    idx = np.argwhere(fg)
    # A plane through the centroid of two orbits would cut the nose between them and show nothing.
    centre = np.array([int(np.argmax(fg.sum(axis=tuple(a for a in range(3) if a != axis)))) for axis in range(3)])
    margin = np.maximum(4, (np.ptp(idx, axis=0) * 0.25).astype(int))
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, labels.shape)
    return centre, lo, hi


def _mark_sides(ax, shape: Tuple[int, ...], marks: Sequence[str]) -> None:
    """The patient's side at each edge of a picture of ``shape`` (rows, columns)."""
    rows, cols = shape[0], shape[1]
    style = dict(color="#ffd24d", fontsize=10, fontweight="bold",
                 bbox=dict(facecolor="black", alpha=0.6, pad=1.0, edgecolor="none"))
    ax.text(0.5, (rows - 1) / 2, marks[0], ha="left", va="center", **style)
    ax.text(cols - 1.5, (rows - 1) / 2, marks[1], ha="right", va="center", **style)
    ax.text((cols - 1) / 2, 0.5, marks[2], ha="center", va="top", **style)
    ax.text((cols - 1) / 2, rows - 1.5, marks[3], ha="center", va="bottom", **style)


def thumbnails(labelmap: Volume, label_set, ct: Optional[Volume] = None, size_in: float = 3.6) -> List[str]:
    """Axial, coronal and sagittal slices through the segmented structures, cropped to them with a
    margin, outlines in the structures' colours, in the patient's orientation whatever the file's
    (:func:`patient_axes`; image left = patient right) and marked with the patient's sides."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if ct is not None and not ct.same_geometry(labelmap, tol=1e-3):
        ct = None  # a CT on another grid would be drawn shifted: better none
    labels, spacing = patient_axes(labelmap)
    image = patient_axes(ct)[0] if ct is not None else None
    centre, lo, hi = _crop(labels)
    values = [int(v) for v in np.unique(labels) if v]
    out = []
    for (title, seen_from, marks), (cut, ratio) in zip(_VIEWS, _view_cuts(centre, lo, hi, spacing)):
        fig, ax = plt.subplots(figsize=(size_in, size_in), dpi=100)
        plane = cut(labels)
        base = cut(image) if image is not None else np.zeros(plane.shape)
        ax.imshow(base, cmap="gray", vmin=-200, vmax=300, aspect=ratio, interpolation="nearest")
        for value in values:
            piece = plane == value
            if piece.any() and min(piece.shape) > 1:
                colour = label_set.by_label(value).color if value in label_set.labels else (1, 1, 0)
                ax.contour(piece, levels=[0.5], colors=[colour], linewidths=1.2)
        _mark_sides(ax, plane.shape, marks)
        ax.set_title(f"{title} ({seen_from})", fontsize=9)
        ax.axis("off")
        fig.tight_layout(pad=0.2)
        out.append(_png(fig))
        plt.close(fig)
    return out


def legend_html(labelmap: Volume, label_set) -> str:
    """The colour of each structure in the pictures, with its key and display name."""
    present = [label_set.by_label(int(v)) for v in np.unique(labelmap.array) if v and int(v) in label_set.labels]
    items = []
    for s in present:
        rgb = ",".join(str(round(255 * c)) for c in s.color)
        items.append(f"<span class='swatch' style='background:rgb({rgb})'></span>{html.escape(s.key)} "
                     f"<span class='note'>({html.escape(s.name)})</span>")
    return "<p class='legend'>" + " &nbsp; ".join(items) + "</p>" if items else ""


def _load_pictures(case: ReportCase) -> None:
    from headseg.io import read_volume
    from headseg.review.compare import read_any_segmentation

    if case.segmentation is None:
        return
    label_set, labelmap = read_any_segmentation(case.segmentation)
    ct = None
    source = case.run.get("input")
    if source and Path(source).exists():
        try:
            ct = read_volume(source)  # a DICOM folder too
        except InputError:
            ct = None
    case.thumbnails = thumbnails(labelmap, label_set, ct)
    case.legend = legend_html(labelmap, label_set)


# -- the page ------------------------------------------------------------------------------------------
def _robust_z(values: Sequence[float]) -> List[float]:
    arr = np.asarray(values, float)
    finite = arr[np.isfinite(arr)]
    if finite.size < 3:
        return [0.0] * len(values)
    median = float(np.median(finite))
    # MAD is 0 when most cases agree exactly; the mean deviation (and 2 % of the median) then set the scale.
    mad = max(float(np.median(np.abs(finite - median))) * 1.4826, float(np.mean(np.abs(finite - median))) * 1.2533,
              0.02 * abs(median))
    if mad <= 1e-9:
        return [0.0] * len(values)
    return [float((v - median) / mad) if math.isfinite(v) else 0.0 for v in arr]


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee;cursor:pointer}td.name,th.name{text-align:left}
td.outlier{outline:2px solid #d33;background:#fde}td.flags{color:#b00;text-align:left}
tr.flagged td.name{font-weight:bold}
section.case{border-top:2px solid #888;margin-top:1.5em;padding-top:.5em}
section.case img{margin-right:4px;border:1px solid #444}
.wide{overflow-x:auto}.legend{font-size:13px}.swatch{display:inline-block;width:12px;height:12px;border:1px solid #444;margin-right:3px;
vertical-align:middle}
.note{color:#555;font-size:12px}.note.flagged{color:#b00}
"""

_SCRIPT = """
window.onerror=function(m){var e=document.getElementById('js-errors');e.textContent+=m+'\\n';};
function sortBy(th){var t=th.closest('table'),b=t.tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th);
var rows=Array.prototype.slice.call(b.rows),asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
rows.sort(function(a,c){var x=a.cells[i].dataset.v||a.cells[i].textContent,y=c.cells[i].dataset.v||c.cells[i].textContent;
var nx=parseFloat(x),ny=parseFloat(y);if(!isNaN(nx)&&!isNaN(ny))return asc?nx-ny:ny-nx;return asc?x.localeCompare(y):y.localeCompare(x);});
rows.forEach(function(r){b.appendChild(r);});}
document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){sortBy(th);});});
document.body.dataset.ready='1';
"""


def _cell(value: Any, klass: str = "", sort_value: Optional[float] = None) -> str:
    attrs = f' class="{klass}"' if klass else ""
    if sort_value is not None and math.isfinite(sort_value):
        attrs += f' data-v="{sort_value:.6g}"'
    return f"<td{attrs}>{html.escape(str(value))}</td>"


def _flags_in_words(rows: Sequence[Dict[str, str]]) -> List[str]:
    """A case's flags as the end of a run says them (headseg.measure.flag_words), from its CSV rows."""
    from headseg.labels import LABEL_SETS
    from headseg.measure.flag_words import flag_sentences
    from headseg.measure.volumes import VolumeRow

    groups = {g for label_set in LABEL_SETS.values() for g in label_set.groups}  # totals, e.g. of the recti
    volume_rows = [VolumeRow(r["structure"], r.get("side") or "", int(r["voxels"]), float(r["volume_cm3"]),
                             derived=r["key"] in groups, key=r["key"], flags=r.get("flags") or "") for r in rows]
    return flag_sentences(volume_rows)


def render_report(cases: Sequence[ReportCase], title: str = "HeadSeg batch report") -> str:
    """The HTML page for ``cases`` (thumbnails already loaded or empty)."""
    keys = list(dict.fromkeys(r["key"] for case in cases for r in case.rows))  # the CSV's and evaluate's key

    def volume(case: ReportCase, key: str) -> float:
        for r in case.rows:
            if r["key"] == key:
                return float(r["volume_cm3"])
        return math.nan

    z = {key: _robust_z([volume(c, key) for c in cases]) for key in keys}
    head = ["case", "flags", "model", "device", "seconds", *keys]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='note'>{len(cases)} case(s). Volumes in cm3. A red outline marks a volume far from the batch's "
             f"median (robust z-score &gt; {OUTLIER_Z}); click a column header to sort. Synthetic or research data "
             "only unless your model says otherwise; review every result.</p>",
             "<pre id='js-errors'></pre>",
             "<div class='wide'><table class='sortable' id='summary'><thead><tr>"
             + "".join(f"<th class='{'name' if h == 'case' else ''}'>{html.escape(h).replace('_', '_<wbr>')}</th>"
                       for h in head) + "</tr></thead><tbody>"]
    order = sorted(range(len(cases)), key=lambda n: (-cases[n].flag_count, cases[n].name))
    for n in order:
        case = cases[n]
        run = case.run
        cells = [f"<td class='name'><a href='#case-{html.escape(case.name)}'>{html.escape(case.name)}</a></td>",
                 _cell(case.flag_count, sort_value=case.flag_count), _cell(run.get("model", "")),
                 _cell(run.get("device", "")),
                 _cell(f"{run['seconds']:.1f}" if "seconds" in run else "", sort_value=run.get("seconds"))]
        for key in keys:
            v = volume(case, key)
            cells.append(_cell("" if not math.isfinite(v) else f"{v:.3f}",
                               "outlier" if abs(z[key][n]) > OUTLIER_Z else "", v))
        parts.append(f"<tr class='{'flagged' if case.flag_count else ''}'>{''.join(cells)}</tr>")
    parts.append("</tbody></table></div>")
    for case in cases:
        parts.append(f"<section class='case' id='case-{html.escape(case.name)}'><h2>{html.escape(case.name)}</h2>")
        run = case.run
        if run:
            facts = ", ".join(f"{k} {html.escape(str(run[k]))}" for k in ("model", "device", "seconds") if k in run)
            parts.append(f"<p class='note'>{facts}</p>")
            for note in run.get("notes") or []:
                parts.append(f"<p class='note'>{html.escape(note)}</p>")
        if case.thumbnails:
            parts.append("<div>" + "".join(f"<img alt='{view[0]} slice' src='data:image/png;base64,{png}'>"
                                            for view, png in zip(_VIEWS, case.thumbnails)) + "</div>")
            parts.append(case.legend)
        else:
            parts.append("<p class='note'>No picture: the segmentation file was not found.</p>")
        for sentence in _flags_in_words(case.rows):
            parts.append(f"<p class='note flagged'>{html.escape(sentence)}</p>")
        columns = [c for c in ("key", "voxels", "volume_cm3", "doubt", "flags") if c in case.rows[0]]
        parts.append("<table class='sortable'><thead><tr>"
                     + "".join(f"<th class='{'name' if c in ('key', 'flags') else ''}'>{c}</th>"
                               for c in columns) + "</tr></thead><tbody>")
        for r in case.rows:
            parts.append("<tr>" + "".join(
                _cell(r.get(c, ""), "flags" if c == "flags" else ("name" if c == "key" else ""))
                for c in columns) + "</tr>")
        parts.append("</tbody></table></section>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def write_report(results_dir: PathLike, out_html: PathLike, overwrite: bool = False, pictures: bool = True) -> Path:
    """Collect the cases of ``results_dir``, draw their pictures and write the page atomically."""
    from headseg.io.files import OutputExistsError, write_atomically

    out = Path(out_html)
    if out.suffix.lower() not in (".html", ".htm"):  # --overwrite must never put a web page over a CT
        raise InputError(f"The report is a web page: name it .html (got {out.name!r}).")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; choose another name or pass --overwrite.")
    cases = collect_cases(results_dir)
    if pictures:
        for case in cases:
            _load_pictures(case)
    page = render_report(cases, title=f"HeadSeg report: {Path(results_dir).name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(out, lambda t: t.write_text(page, encoding="utf-8"), overwrite=True)
