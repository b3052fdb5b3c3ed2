"""Follow-up comparison: did a structure grow between two scans of the same patient, by more than
re-segmenting the same scan would change it?

Volumes are measured on each segmentation's own grid (exact voxel counts, as the volume table does);
the two CTs are rigidly registered only to *show* where the change lies (the follow-up contours drawn
on the baseline CT) and to refuse pairs that do not overlap like two scans of one head. A change is
called real when its magnitude exceeds the structure's repeatability bound: the 95th percentile of the
relative volume change when the *same* scan is re-segmented after a small rigid motion, measured per
model by ``tools/measure_repeatability.py`` and stored in ``headseg/review/repeatability.json``.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from headseg.errors import InputError
from headseg.geometry import Volume, bounding_box
from headseg.paths import PathLike

__all__ = ["TimePoint", "ChangeRow", "Comparison", "load_timepoint", "compare_timepoints", "compare_results",
           "register_rigid", "repeatability_bounds", "write_comparison", "write_change_csv", "CHANGE_COLUMNS",
           "DEFAULT_BOUND_PCT", "MIN_BONE_DICE"]

log = logging.getLogger(__name__)

REPEATABILITY_FILE = Path(__file__).with_name("repeatability.json")
#: Used for a structure without a measured bound (said in the row): a conservative 10 %.
DEFAULT_BOUND_PCT = 10.0
#: Registration quality: the bone (> 300 HU) of the two CTs must overlap with at least this Dice after
#: registration; two scans of one head overlap at 0.7-0.9 on a coarse grid, different heads far less.
MIN_BONE_DICE = 0.55
BONE_HU = 300.0
CHANGE_COLUMNS = ("structure", "side", "baseline_cm3", "followup_cm3", "change_cm3", "change_pct",
                  "repeatability_pct", "exceeds")
CT_NAMES = ("image", "ct", "CT")


@dataclass
class TimePoint:
    """One scan: its segmentation (label-set values), label set, and optionally the CT and patient ID."""

    labelmap: Volume
    label_set: Any
    name: str
    ct: Optional[Volume] = None
    patient_id: Optional[str] = None  # the CT's DICOM PatientID, when a DICOM CT was given
    run: Dict[str, Any] = field(default_factory=dict)  # <case>_run.json beside the segmentation (model, patient)

    @property
    def patient_keys(self) -> Set[str]:
        """The hashed PatientIDs known for this scan: from its run record and from its CT's DICOM tags."""
        from headseg.io.dicom_series import hash_patient_id

        keys = {hash_patient_id(self.patient_id), self.run.get("patient_id_sha256")}
        return {str(k) for k in keys if k}


@dataclass
class ChangeRow:
    structure: str
    side: str
    key: str
    name: str
    baseline_cm3: float
    followup_cm3: float
    repeatability_pct: float
    bound_measured: bool = True
    bound_applies: bool = True  # False when the two results come from different models


    @property
    def change_cm3(self) -> float:
        return self.followup_cm3 - self.baseline_cm3

    @property
    def change_pct(self) -> float:
        return 100.0 * self.change_cm3 / self.baseline_cm3 if self.baseline_cm3 > 0 else math.nan

    @property
    def exceeds(self) -> bool:
        return self.bound_applies and math.isfinite(self.change_pct) and abs(self.change_pct) > self.repeatability_pct

    def as_dict(self) -> Dict[str, object]:
        pct = self.change_pct
        return {"structure": self.structure, "side": self.side, "baseline_cm3": round(self.baseline_cm3, 4),
                "followup_cm3": round(self.followup_cm3, 4), "change_cm3": round(self.change_cm3, 4),
                "change_pct": "" if not math.isfinite(pct) else round(pct, 2),
                "repeatability_pct": round(self.repeatability_pct, 2) if self.bound_applies else "",
                "exceeds": ("yes" if self.exceeds else "no") if self.bound_applies else "not applicable"}


@dataclass
class Comparison:
    baseline: TimePoint
    followup: TimePoint
    rows: List[ChangeRow]
    transform: Any = None  # SimpleITK transform: baseline (fixed) points -> follow-up points
    bone_dice: Optional[float] = None
    notes: List[str] = field(default_factory=list)
    models_differ: str = ""  # the sentence saying so, when --allow-different-models let two models through

    def summary(self) -> str:
        """Sentences a clinician reads first: the changes beyond the bound, largest first."""
        real = sorted((r for r in self.rows if r.exceeds), key=lambda r: -abs(r.change_pct))
        lines = [f"{self.baseline.name} -> {self.followup.name} ({self.baseline.label_set.name} structures)."]
        if self.models_differ:
            lines.insert(0, self.models_differ)
            moved = sorted((r for r in self.rows if math.isfinite(r.change_pct)), key=lambda r: -abs(r.change_pct))
            lines += [f"{r.name} {r.change_pct:+.0f} % ({r.baseline_cm3:.2f} -> {r.followup_cm3:.2f} cm3); no "
                      "repeatability bound applies." for r in moved[:5]]
            return "\n".join(lines + self.notes) + "\n"
        if self.bone_dice is not None:
            lines.append(f"Registration: bone overlap (Dice) {self.bone_dice:.2f} after rigid alignment.")
        if not real:
            lines.append("No structure changed by more than its repeatability bound.")
        for r in real:
            lines.append(f"{r.name} {r.change_pct:+.0f} % ({r.baseline_cm3:.2f} -> {r.followup_cm3:.2f} cm3), "
                         f"above the {r.repeatability_pct:.0f} % repeatability bound.")
        return "\n".join(lines + self.notes) + "\n"


# -- reading -------------------------------------------------------------------------------------------
def read_any_segmentation(path: Path):
    """(label set, label map) of a HeadSeg segmentation file, trying each label set (orbit first)."""
    from headseg.io import read_segmentation
    from headseg.labels import LABEL_SETS

    problems = []
    for name in ("orbit", "openkbp", "pddca"):
        try:
            return LABEL_SETS[name], read_segmentation(path, LABEL_SETS[name])
        except InputError as exc:
            problems.append(str(exc))
    raise InputError(f"{path} matches none of HeadSeg's label sets (orbit, openkbp, pddca); was it made by "
                     f"HeadSeg or exported from its Slicer modules? ({problems[0]})")


def _find_ct(folder: Path, case: str) -> Optional[Path]:
    for stem in (case, *CT_NAMES):
        for suffix in (".nrrd", ".nii.gz", ".nii", ".mha"):
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file() and not candidate.name.endswith(".seg.nrrd"):
                return candidate
    return None


def load_timepoint(path: PathLike, ct: Optional[PathLike] = None) -> TimePoint:
    """A scan from a ``.seg.nrrd`` file or a folder holding exactly one; the CT is ``ct`` (a file or a
    DICOM folder), found beside the segmentation (``<case>.nrrd``, ``image.*``, ``ct.*``) or the input its
    ``<case>_run.json`` names, when that still exists."""
    from headseg.io import read_volume

    path = Path(path)
    if path.is_dir():
        segs = sorted(path.glob("*.seg.nrrd"))
        if len(segs) != 1:
            raise InputError(f"{path} holds {len(segs)} .seg.nrrd files; name the segmentation file itself.")
        path = segs[0]
    if not path.is_file():
        raise InputError(f"{path} does not exist; give a .seg.nrrd file or a folder holding one.")
    case = path.name[: -len(".seg.nrrd")] if path.name.endswith(".seg.nrrd") else path.stem
    label_set, labelmap = read_any_segmentation(path)
    run = _run_record(path.parent / f"{case}_run.json")
    ct_path = Path(ct) if ct is not None else _find_ct(path.parent, case)
    if ct_path is None and run.get("input") and Path(str(run["input"])).exists():
        ct_path = Path(str(run["input"]))  # the CT it was segmented from, where run.json says it was
    image, patient = None, None
    if ct_path is not None:
        from headseg.io.dicom_series import dicom_patient_id

        image = read_volume(ct_path)  # a DICOM folder too
        patient = dicom_patient_id(ct_path)
    return TimePoint(labelmap, label_set, case, image, patient, run)


def _run_record(path: Path) -> Dict[str, Any]:
    """``<case>_run.json`` (model, weights hash, hashed PatientID), or {} when there is none; a file that is
    not a run record is refused (it would hide a model or patient mismatch)."""
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"Cannot read {path} ({exc}); it tells which model and patient the result is of. "
                         "Segment the scan again, or move the damaged file away.") from None
    if not isinstance(record, dict):
        raise InputError(f"{path} is not a HeadSeg run record (a JSON object); segment the scan again, or move it "
                         "away.")
    return record


# -- repeatability -------------------------------------------------------------------------------------
def repeatability_bounds(label_set_name: str, path: PathLike = REPEATABILITY_FILE) -> Dict[str, float]:
    """Structure base key -> bound in percent for ``label_set_name`` (empty when not measured)."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    entry = data.get(label_set_name) or {}
    return {k: float(v) for k, v in (entry.get("bound_pct") or {}).items()}


# -- registration --------------------------------------------------------------------------------------
def _coarse(volume: Volume, spacing_mm: float):
    """A float32 SimpleITK copy at about ``spacing_mm`` (never finer than the input), clamped to
    [-1000, 1500] HU: registration needs the head's shape, not 0.5 mm detail, and runs 50x faster."""
    import SimpleITK as sitk

    from headseg.resample import resample_to_spacing

    spacing = [max(float(s), spacing_mm) for s in volume.spacing]
    coarse = resample_to_spacing(volume.with_array(volume.array.astype(np.float32)), spacing)
    image = sitk.Cast(coarse.to_sitk(), sitk.sitkFloat32)
    return sitk.Clamp(image, lowerBound=-1000.0, upperBound=1500.0)


def register_rigid(fixed: Volume, moving: Volume, shrink: Sequence[int] = (2, 1), spacing_mm: float = 1.5):
    """Rigid (Euler 3D) registration of ``moving`` onto ``fixed`` by Mattes mutual information, multi-
    resolution on ``spacing_mm`` copies; returns the transform taking fixed (LPS) points to moving points."""
    import SimpleITK as sitk

    f = _coarse(fixed, spacing_mm)
    m = _coarse(moving, spacing_mm)
    initial = sitk.CenteredTransformInitializer(f, m, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=48)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed=7)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=100,
                                                 relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel([float(s) / 2.0 for s in shrink])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(initial, inPlace=False)
    return reg.Execute(f, m)


def resample_moving(moving: Volume, fixed: Volume, transform, nearest: bool, default: float = 0.0) -> Volume:
    """``moving`` on ``fixed``'s grid through ``transform`` (fixed -> moving points)."""
    import SimpleITK as sitk

    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = sitk.Resample(moving.to_sitk(), fixed.to_sitk(), transform, interpolator, default)
    return Volume.from_sitk(out)


def bone_dice(fixed: Volume, moving_on_fixed: Volume) -> float:
    from headseg.measure.metrics import dice

    return float(dice(fixed.array > BONE_HU, moving_on_fixed.array > BONE_HU))


# -- comparing -----------------------------------------------------------------------------------------
def compare_timepoints(baseline: TimePoint, followup: TimePoint, register: bool = True,
                       bounds: Optional[Dict[str, float]] = None, allow_different_models: bool = False) -> Comparison:
    """Volumes at both times per structure and side, with the repeatability bound; refuses (InputError)
    pairs of different label sets, different patients (PatientIDs from the run records or the CTs' DICOM
    tags, when known), different models (unless ``allow_different_models``: then the summary says so first
    and no bound applies) or a failed registration."""
    from headseg.measure.volumes import volume_table

    if baseline.label_set.name != followup.label_set.name:
        raise InputError(f"The baseline holds {baseline.label_set.name} structures and the follow-up "
                         f"{followup.label_set.name} structures; compare segmentations of the same kind.")
    patient_notes = _check_one_patient(baseline, followup)
    models_differ = _check_one_model(baseline, followup, allow_different_models)
    bounds = repeatability_bounds(baseline.label_set.name) if bounds is None else bounds
    rows: List[ChangeRow] = []
    after = {r.key: r for r in volume_table(followup.labelmap, followup.label_set)}
    for before in volume_table(baseline.labelmap, baseline.label_set):
        other = after.get(before.key)
        if other is None:
            continue
        measured = before.structure in bounds
        rows.append(ChangeRow(before.structure, before.side, before.key, before.name or before.key,
                              before.volume_cm3, other.volume_cm3, bounds.get(before.structure, DEFAULT_BOUND_PCT),
                              measured, not models_differ))
    comparison = Comparison(baseline, followup, rows, models_differ=models_differ)
    comparison.notes += patient_notes
    unmeasured = sorted({r.structure for r in rows if not r.bound_measured})
    if unmeasured:
        comparison.notes.append(f"No measured repeatability for {', '.join(unmeasured)}: "
                                f"{DEFAULT_BOUND_PCT:.0f} % assumed.")
    if register and baseline.ct is not None and followup.ct is not None:
        transform = register_rigid(baseline.ct, followup.ct)
        moved = resample_moving(followup.ct, baseline.ct, transform, nearest=False, default=-1000.0)
        comparison.transform, comparison.bone_dice = transform, bone_dice(baseline.ct, moved)
        if comparison.bone_dice < MIN_BONE_DICE:
            raise InputError(
                f"The two CTs do not align like two scans of one head (bone overlap {comparison.bone_dice:.2f} "
                f"after rigid registration, {MIN_BONE_DICE} needed): check that both are the same patient "
                "and cover the same region, or compare the volume tables without the picture (--no-register).")
    elif register:
        comparison.notes.append("No CT beside one of the segmentations: volumes compared, no registration "
                                "and no picture.")
    return comparison


def _check_one_patient(baseline: TimePoint, followup: TimePoint) -> List[str]:
    """Refuse two scans known to be of different patients; notes when it could not be checked."""
    for point in (baseline, followup):
        if len(point.patient_keys) > 1:
            raise InputError(f"The CT given for {point.name} is of another patient than its segmentation (the "
                             "PatientIDs of the CT and of the run record differ); give the CT the scan was "
                             "segmented from.")
    before, after = baseline.patient_keys, followup.patient_keys
    if before and after and not before & after:
        raise InputError("The two results are of different patients (their PatientIDs differ); a follow-up "
                         "comparison needs two scans of one patient.")
    if not (before and after):
        return ["The patient could not be checked (no DICOM PatientID in a run record or CT of "
                f"{'both scans' if not (before or after) else 'one scan'}): make sure both are of one patient."]
    return []


def _check_one_model(baseline: TimePoint, followup: TimePoint, allow: bool) -> str:
    """'' when both results come from one model (name and weights) or it is not recorded; else refuse, or,
    with ``allow``, the sentence the summary starts with."""
    a, b = baseline.run, followup.run
    if not (a.get("model") and b.get("model")):
        return ""
    same_weights = not (a.get("model_sha256") and b.get("model_sha256")) or a["model_sha256"] == b["model_sha256"]
    if a["model"] == b["model"] and same_weights:
        return ""
    which = (f"model {a['model']!r} and the follow-up by model {b['model']!r}" if a["model"] != b["model"] else
             f"model {a['model']!r} with other weights at each time")
    if not allow:
        raise InputError(f"The baseline was segmented by {which}: a change between them may be the models' "
                         "difference, not the patient's. Segment both scans with one model, or pass "
                         "--allow-different-models to compare anyway (no repeatability bound then applies).")
    return (f"DIFFERENT MODELS: the baseline was segmented by {which}. The changes below include the difference "
            "between the models; the repeatability bounds do not apply.")


# -- writing -------------------------------------------------------------------------------------------
def write_comparison(comparison: Comparison, out_dir: PathLike, overwrite: bool = False) -> List[Path]:
    """``OUT/change.csv``, ``OUT/summary.txt`` and one ``OUT/change_<group>.png`` per structure group
    (each orbit, or all organs) when both CTs were registered. Existing files are kept unless
    ``overwrite``."""
    from headseg.io.files import write_atomically

    out = Path(out_dir)
    groups = _groups(comparison)
    check_comparison_outputs(out, comparison.baseline.label_set, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_change_csv(comparison.rows, out / "change.csv"),
               write_atomically(out / "summary.txt", lambda t: t.write_text(comparison.summary(), encoding="utf-8"),
                                overwrite=True)]
    if comparison.transform is not None:
        moved = resample_moving(comparison.followup.labelmap, comparison.baseline.labelmap, comparison.transform,
                                nearest=True)
        for group, keys in groups.items():
            draw = functools.partial(_draw_group, comparison, moved, keys, group)
            written.append(write_atomically(out / f"change_{group}.png", draw, overwrite=True))
    return written


def compare_results(baseline: PathLike, followup: PathLike, out_dir: PathLike,
                    baseline_ct: Optional[PathLike] = None, followup_ct: Optional[PathLike] = None,
                    register: bool = True, allow_different_models: bool = False,
                    overwrite: bool = False) -> Tuple[Comparison, List[Path]]:
    """``headseg compare``: two results of one patient (each a ``.seg.nrrd`` or a folder holding one,
    :func:`load_timepoint`) compared and written into ``out_dir`` (:func:`write_comparison`). The outputs
    are checked before the registration, so a refusal costs nothing."""
    first = load_timepoint(baseline, baseline_ct)
    second = load_timepoint(followup, followup_ct)
    check_comparison_outputs(out_dir, first.label_set, overwrite=overwrite)
    comparison = compare_timepoints(first, second, register=register, allow_different_models=allow_different_models)
    return comparison, write_comparison(comparison, out_dir, overwrite=overwrite)


def check_comparison_outputs(out_dir: PathLike, label_set: Any, overwrite: bool = False) -> None:
    """Refuse, before any registration, when a file a comparison of ``label_set`` may write into
    ``out_dir`` exists (``change.csv``, ``summary.txt``, each group's picture) and not ``overwrite``."""
    from headseg.io.files import OutputExistsError

    out = Path(out_dir)
    planned = [out / "change.csv", out / "summary.txt"] + [out / f"change_{g}.png" for g in _label_groups(label_set)]
    existing = [p for p in planned if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]} exists; choose another output folder or pass --overwrite.")


def write_change_csv(rows: Sequence[ChangeRow], path: PathLike) -> Path:
    """``change.csv`` (:data:`CHANGE_COLUMNS`), written atomically over any file at ``path`` (the CLI
    checks first; the Slicer panel's save dialog has asked)."""
    from headseg.io.files import write_atomically

    def write_csv(temp: Path) -> None:
        with open(temp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CHANGE_COLUMNS)
            writer.writeheader()
            writer.writerows(r.as_dict() for r in rows)

    return write_atomically(Path(path), write_csv, overwrite=True)


def _groups(comparison: Comparison) -> Dict[str, List[str]]:
    return _label_groups(comparison.baseline.label_set)


def _label_groups(label_set: Any) -> Dict[str, List[str]]:
    """The pictures of a comparison: each orbit, or all organs together."""
    if label_set.name == "orbit":
        return {f"{side}_orbit": [s.key for s in label_set.structures if s.side == side] for side in ("right", "left")}
    return {"organs": [s.key for s in label_set.structures]}


def _draw_group(comparison: Comparison, moved: Volume, keys: Sequence[str], group: str, path: Path) -> None:
    """Axial and coronal slices through the group's centre on the baseline CT, in the patient's
    orientation (as the report draws them): baseline contours solid, registered follow-up contours
    dashed, one colour per structure, and a legend that says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from headseg.geometry import patient_axes

    base = comparison.baseline
    label_set = base.label_set
    labels = [label_set.by_key(k).label for k in keys]
    before, spacing = patient_axes(base.labelmap)
    after = patient_axes(moved)[0]
    mask = np.isin(before, labels) | np.isin(after, labels)
    fig, axes = plt.subplots(1, 2, figsize=(9, 5.2), dpi=100)
    if not mask.any():
        for ax in axes:
            ax.axis("off")
        axes[0].text(0.5, 0.5, "nothing segmented in this group", ha="center", transform=axes[0].transAxes)
    else:
        ct = patient_axes(base.ct)[0] if base.ct is not None and base.ct.same_geometry(base.labelmap, tol=1e-3) \
            else None
        _draw_planes(axes, mask, spacing, ct, [(label_set.by_key(k), v) for k, v in zip(keys, labels)], before, after)
    changes = [r for r in comparison.rows if r.key in keys]
    text = "; ".join(f"{r.name}: {r.change_pct:+.0f} %" for r in changes if math.isfinite(r.change_pct))
    fig.suptitle(f"{group.replace('_', ' ')}: {base.name} solid, {comparison.followup.name} dashed "
                 "(registered)", fontsize=10)
    _legend(fig, [label_set.by_key(k) for k in keys], base.name, comparison.followup.name)
    fig.text(0.5, 0.01, text, ha="center", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.16, 1, 0.94))
    fig.savefig(path, format="png")
    plt.close(fig)


def _draw_planes(axes, mask: np.ndarray, spacing: Sequence[float], ct: Optional[np.ndarray], structures,
                 before: np.ndarray, after: np.ndarray) -> None:
    """Axial (from the feet) and coronal (from the front) cuts of arrays in head, back, left order."""
    centre = np.round(np.argwhere(mask).mean(axis=0)).astype(int)
    box = bounding_box(mask, 15)
    lo, hi = [b.start for b in box], [b.stop for b in box]
    planes = (("axial, from the feet", lambda a: a[centre[0], lo[1]:hi[1], lo[2]:hi[2]], spacing[1] / spacing[2]),
              ("coronal, from the front", lambda a: a[lo[0]:hi[0], centre[1], lo[2]:hi[2]][::-1],
               spacing[0] / spacing[2]))
    for ax, (title, cut, aspect) in zip(axes, planes):
        if ct is not None:
            ax.imshow(cut(ct), cmap="gray", vmin=-200, vmax=300, interpolation="nearest", aspect=aspect)
        for structure, value in structures:
            for array, style in ((before, "solid"), (after, "dashed")):
                piece = cut(array) == value
                if piece.any() and min(piece.shape) > 1:
                    ax.contour(piece, levels=[0.5], colors=[structure.color], linestyles=style, linewidths=1.2)
        ax.set_aspect(aspect)
        ax.set_title(f"{title} (image left = patient right)", fontsize=9)
        ax.axis("off")


def _legend(fig, structures: Sequence[Any], baseline: str, followup: str) -> None:
    """Which colour is which structure, and which line is which scan."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=s.color, linewidth=3, label=s.name) for s in structures]
    handles += [Line2D([], [], color="black", linestyle="solid", label=f"baseline ({baseline})"),
                Line2D([], [], color="black", linestyle="dashed", label=f"follow-up ({followup}), registered")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.04))
