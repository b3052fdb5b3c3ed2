"""From a CT volume and a model package to a label map on the CT's own grid.

The two tasks differ only in how the model sees the CT:

* ``orbit`` (the SV-net paper): each orbit is located, resampled into the model's crop (left orbits
  mirrored so the network always sees a right orbit), predicted with the 32-slice sliding window, and the
  class probabilities are resampled back onto the input grid and labelled per side.
* ``han`` (the AnatomyNet paper): the whole CT is resampled onto the model's LPS grid and spacing,
  predicted whole (or in large patches when it does not fit), and the probabilities resampled back.

In both, probabilities are interpolated before the argmax, and the SV-net paper's post-processing (hole
filling and largest connected component per class) runs on the input grid, so what the user sees and
measures is what was cleaned.

The card (``headseg.segment.model_card.ModelCard``) says which of the two a model is and how it is run;
:func:`headseg.segment.windows.predict_probabilities` is the one predictor (training validates with it
too). A run chooses its device once and may pass the :class:`~headseg.segment.runtime.DeviceChoice` and
the loaded model to every :func:`segment_volume`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.segment.model_card import ModelCard, is_orbit_task
from headseg.segment.packages import ModelPackage
from headseg.segment.preprocessing import AIR_HU, body_crop, model_grid_for, normalize, orbit_crops, subgrid_covering
from headseg.segment.sides import split_classes_by_side
from headseg.validation import check_ct, check_roi, orbit_resolution_note

if TYPE_CHECKING:
    from headseg.segment.runtime import DeviceChoice  # torch: imported when a volume is segmented

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]


@dataclass
class SegmentationResult:
    labelmap: Volume  # label-set values on the input grid (uint8)
    label_set: Any
    model_name: str
    device: str
    notes: List[str] = field(default_factory=list)  # warnings the user should see (fallbacks, QC)
    regions: Dict[str, Any] = field(default_factory=dict)  # orbit side -> RegionBox used
    seconds: float = 0.0
    uncertainty: Optional[Volume] = None  # float32 normalised entropy in [0, 1] on the input grid
    quality: Dict[str, Any] = field(default_factory=dict)  # label-set key -> headseg.measure.quality.StructureQuality
    tta: bool = False  # the probabilities were averaged over test-time variants (tta_variants)
    volumes: List[Any] = field(default_factory=list)  # headseg.measure.volumes.VolumeRow of labelmap, once per case


class _Stages:
    """Maps per-stage progress onto one 0..1 bar."""

    def __init__(self, progress: Optional[ProgressCallback], weights: Sequence[float]):
        self.progress = progress
        total = float(sum(weights))
        self.starts = np.concatenate([[0.0], np.cumsum(weights)[:-1]]) / total
        self.widths = np.asarray(weights, dtype=float) / total

    def report(self, stage: int, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(float(min(1.0, self.starts[stage] + self.widths[stage] * fraction)), message)

    def callback(self, stage: int, message: str) -> ProgressCallback:
        def report(fraction: float, text: str = "") -> None:
            self.report(stage, fraction, text or message)

        return report


def segment_volume(volume: Volume, package: ModelPackage, device: Union[str, DeviceChoice] = "auto",
                   roi: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
                   keep: Optional[Sequence[str]] = None, progress: Optional[ProgressCallback] = None,
                   cancel: Any = None, batch_size: Optional[int] = None, model: Any = None,
                   uncertainty: bool = True, tta: bool = False) -> SegmentationResult:
    """Segment ``volume`` with ``package``; ``roi`` = (centre LPS mm, size mm) restricts the orbit search,
    ``keep`` = label-set keys to keep (others are dropped), ``cancel`` a ``headseg.segment.windows.CancelToken``.
    ``device``: a request (``"auto"``, ``"cpu"``, ``"cuda:1"``, ...) or the run's
    :class:`~headseg.segment.runtime.DeviceChoice`; ``model``: the package's network already loaded there.
    ``uncertainty`` also returns the per-voxel uncertainty map (normalised entropy of the model's
    probabilities, ``headseg.measure.quality``) and each structure's doubt; flags are always computed. ``tta``
    averages the model's probabilities over test-time variants of the input (:func:`tta_variants`), and
    the uncertainty map is then that of the average, which also holds where the variants disagree."""
    from headseg.measure.quality import body_midline_x, structure_quality
    from headseg.measure.volumes import volume_table
    from headseg.segment.runtime import as_device_choice, load_on_device

    start = time.perf_counter()
    notes = check_ct(volume)
    if roi is not None:
        check_roi(roi, volume)  # before any work: a box outside the image or of metres fails here, not later
    choice = as_device_choice(device)
    log.info("Device: %s (%s)", choice.device, choice.reason)
    if model is None:
        choice, model = load_on_device(package, choice)
    review = _Review(volume.shape, uncertainty)
    if package.card.is_orbit:
        coarse = orbit_resolution_note(volume)
        notes += [coarse] if coarse else []
        labels, regions, more = _segment_orbits(volume, package, model, choice.device, roi, progress, cancel,
                                                batch_size, review, tta)
    else:
        labels, more = _segment_whole(volume, package, model, choice.device, progress, cancel, batch_size, review,
                                      tta)
        regions = {}
    notes += more
    label_set = package.label_set
    if keep:
        unknown = [k for k in keep if k not in label_set.keys()]
        if unknown:
            raise InputError(f"Unknown structures {unknown}; choose from {', '.join(label_set.keys())}.")
        kept = [label_set.by_key(k).label for k in keep]
        labels[~np.isin(labels, kept)] = 0
    labelmap = volume.with_array(labels)
    rows = volume_table(labelmap, label_set)
    notes += plausibility_notes(labelmap, label_set, rows)
    removed = {label_set.by_label(v).key: share for v, share in review.removed.items() if v in label_set.labels}
    quality = structure_quality(labelmap, label_set, review.map, body_midline_x(volume, near=labels > 0), removed,
                                structures=list(keep) if keep else None)
    unc = None if review.map is None else volume.with_array(review.map)
    result = SegmentationResult(labelmap, label_set, package.name, str(choice.device), notes,
                                regions, time.perf_counter() - start, unc, quality, bool(tta), rows)
    if progress:
        progress(1.0, "Done")
    return result


def _predict(model, image: np.ndarray, card: ModelCard, device, progress, cancel, batch_size) -> Tuple[np.ndarray, List[str]]:
    """Class probabilities [C, k, j, i] for one normalised image (``predict_probabilities``), retried with
    a smaller batch or on the CPU when the device runs out of memory."""
    from headseg.segment.runtime import run_with_fallback
    from headseg.segment.windows import predict_probabilities

    def run(dev, bs):
        return predict_probabilities(model, image, card, dev, batch_size=bs, progress=progress, cancel=cancel)

    result = run_with_fallback(run, device, batch_size or card.inference.batch_size, model=model)
    return result.output, list(result.notes)


class _Review:
    """What the review aids collect while segmenting: the uncertainty map on the input grid (when asked)
    and, per label value, the share of raw voxels that post-processing removed."""

    def __init__(self, shape: Sequence[int], uncertainty: bool):
        self.map: Optional[np.ndarray] = np.zeros(tuple(shape), np.float32) if uncertainty else None
        self.removed: Dict[int, float] = {}

    def add_uncertainty(self, probs: np.ndarray, grid: Volume, target: Volume, slices=None) -> None:
        if self.map is None:
            return
        from headseg.measure.quality import normalized_entropy
        from headseg.resample import resample_to_grid

        entropy = grid.with_array(normalized_entropy(probs))
        on_target = resample_to_grid(entropy, target, interpolation="linear", default_value=0.0).array
        view = self.map if slices is None else self.map[slices]
        np.maximum(view, on_target, out=view)

    def add_removed(self, before: np.ndarray, after: np.ndarray, values_of: np.ndarray) -> None:
        """``before``/``after`` in model classes; ``values_of[c]`` the label value of class c."""
        from headseg.measure.quality import removed_shares

        classes = [c for c in range(1, len(values_of)) if values_of[c]]
        for c, share in removed_shares(before, after, classes).items():
            self.removed[int(values_of[c])] = share


#: Test-time variants of an orbit crop: the crop grid shifted by whole crop voxels (k, j, i). A shift
#: changes how the CT is sampled into the crop and where the network's pooling falls, so the average
#: smooths out the model's sensitivity to where the grid happens to lie. No flip: a mirrored right orbit
#: would look like a left one, which the model never sees.
ORBIT_TTA_SHIFTS_KJI: Tuple[Tuple[int, int, int], ...] = ((0, 0, 0), (1, 1, 1), (-1, -1, 1), (1, -1, -1))


def tta_variants(task: str, tta: bool) -> int:
    """How many predictions one region costs: 1 without TTA; with it, the orbit's shifted crops or the
    head-and-neck volume and its left-right mirror."""
    if not tta:
        return 1
    return len(ORBIT_TTA_SHIFTS_KJI) if is_orbit_task(task) else 2


def _shifted(volume: Volume, crop: Volume, shift_kji: Sequence[int]) -> Volume:
    """``volume`` resampled onto ``crop``'s grid moved by ``shift_kji`` of its own voxels."""
    from headseg.resample import Grid, resample_to_grid

    offset = crop.direction @ (np.asarray(crop.spacing) * np.asarray(shift_kji[::-1], dtype=float))
    grid = Grid(crop.shape, crop.spacing, np.asarray(crop.origin) + offset, crop.direction)
    return resample_to_grid(volume, grid, interpolation="linear", default_value=AIR_HU)


def _predict_orbit_crop(volume, crop, card, model, device, progress, cancel, batch_size, tta: bool):
    """Class probabilities on ``crop``'s grid; with ``tta`` the mean over the shifted crops, each voxel
    over the variants that cover it."""
    shifts = ORBIT_TTA_SHIFTS_KJI if tta else ORBIT_TTA_SHIFTS_KJI[:1]
    total: Optional[np.ndarray] = None
    count = np.zeros(crop.image.shape, np.float32)
    notes: List[str] = []
    for n, shift in enumerate(shifts):
        image = crop.image if not any(shift) else _shifted(volume, crop.image, shift)
        x = normalize(image.array, card.input.normalization)

        def report(fraction: float, text: str = "", n=n) -> None:
            if progress is not None:
                progress((n + fraction) / len(shifts), text)

        probs, more = _predict(model, x, card, device, report, cancel, batch_size)
        notes += [m for m in more if m not in notes]
        if total is None:
            total = np.zeros_like(probs, dtype=np.float32)
        # Voxel m of the shifted crop lies where voxel m + shift of the crop does.
        dst = tuple(slice(max(s, 0), n_ + min(s, 0)) for s, n_ in zip(shift, crop.image.shape))
        src = tuple(slice(max(-s, 0), n_ - max(s, 0)) for s, n_ in zip(shift, crop.image.shape))
        total[(slice(None),) + dst] += probs[(slice(None),) + src]
        count[dst] += 1.0
    assert total is not None  # shifts is never empty
    return total / count[None], notes


def _segment_orbits(volume, package, model, device, roi, progress, cancel, batch_size, review: _Review,
                    tta: bool = False):
    from headseg.labels import orbit_combined_label
    from headseg.resample import resample_probabilities_to_grid
    from headseg.segment.postprocess import postprocess_labels

    card = package.card
    stages = _Stages(progress, [1, 8, 1, 8, 1])
    stages.report(0, 0.0, "Locating the orbits")
    crops = orbit_crops(volume, card, roi)
    if not crops:
        raise InputError("No orbit was found in the region given. Enlarge the region of interest.")
    labels = np.zeros(volume.shape, np.uint8)
    notes: List[str] = []
    regions = {}
    for n, crop in enumerate(crops):
        stage = 1 + 2 * n if len(crops) == 2 else 1
        probs, more = _predict_orbit_crop(volume, crop, card, model, device,
                                          stages.callback(stage, f"Segmenting the {crop.side} orbit"), cancel,
                                          batch_size, tta)
        notes += more
        sub_grid, slices = subgrid_covering(volume, crop.image)
        raw = resample_probabilities_to_grid(probs, crop.image, sub_grid).array
        sub_labels = postprocess_labels(raw, **card.postprocess.kwargs())
        review.add_removed(raw, sub_labels, np.array([0] + [orbit_combined_label(crop.side, c)
                                                            for c in range(1, probs.shape[0])]))
        review.add_uncertainty(probs, crop.image, sub_grid, slices)
        mapped = np.zeros_like(sub_labels, dtype=np.uint8)
        for c in range(1, probs.shape[0]):
            mapped[sub_labels == c] = orbit_combined_label(crop.side, c)
        target = labels[slices]
        free = target == 0  # the other orbit's result is never overwritten
        target[free] = mapped[free]
        regions[crop.side] = crop.box
        stages.report(stage + 1 if len(crops) == 2 else 4, 1.0, f"{crop.side.capitalize()} orbit done")
    missing = {"right", "left"} - set(regions)
    if missing and roi is None:
        notes.append(f"Only the {', '.join(sorted(regions))} orbit was found; the {', '.join(missing)} was not segmented.")
    return labels, regions, notes


def _mirror_channels(network_classes: Sequence[str], label_set) -> List[int]:
    """For each network class, the class it becomes in the left-right mirror image (its other side)."""
    classes = list(network_classes)
    order = list(range(len(classes)))
    for c, key in enumerate(classes):
        if key in label_set and label_set.by_key(key).side:
            twin = key.rsplit("_", 1)[0] + ("_left" if key.endswith("_right") else "_right")
            if twin in classes:
                order[c] = classes.index(twin)
    return order


def _segment_whole(volume, package, model, device, progress, cancel, batch_size, review: _Review,
                   tta: bool = False):
    from headseg.resample import resample_probabilities_to_grid, resample_to_grid
    from headseg.segment.postprocess import postprocess_labels

    card = package.card
    stages = _Stages(progress, [1, 8, 2])
    stages.report(0, 0.0, "Resampling to the model grid")
    grid = model_grid_for(volume, card.input.spacing_mm)
    image = resample_to_grid(volume, grid, interpolation="linear", default_value=AIR_HU)
    # Only the box around the patient is segmented and resampled back; the air around it is background.
    image = body_crop(image)
    x = normalize(image.array, card.input.normalization)
    probs, notes = _predict(model, x, card, device, stages.callback(1, "Segmenting organs"), cancel, batch_size)
    if tta:  # the model grid is LPS, so i runs along the patient's left-right axis
        mirrored, more = _predict(model, np.ascontiguousarray(x[:, :, ::-1]), card, device,
                                  stages.callback(1, "Segmenting organs (mirrored)"), cancel, batch_size)
        notes += [m for m in more if m not in notes]
        probs = 0.5 * (probs + mirrored[_mirror_channels(card.classes, package.label_set)][:, :, :, ::-1])
    stages.report(2, 0.0, "Resampling the result to the CT grid")
    sub_grid, slices = subgrid_covering(volume, image)
    model_labels = np.zeros(volume.shape, np.uint8)
    model_labels[slices] = resample_probabilities_to_grid(probs, image, sub_grid).array
    # Paired organs predicted as one class get their side from the patient's midline before the
    # largest-component step, which would otherwise keep only one of the two glands.
    raw = split_classes_by_side(model_labels, volume, card, image=volume.array)
    model_labels = postprocess_labels(raw, **card.postprocess.kwargs())
    label_set = package.label_set
    classes = card.output_classes
    lut = np.zeros(len(classes), np.uint8)
    for c, key in enumerate(classes[1:], start=1):
        lut[c] = label_set.by_key(key).label
    review.add_removed(raw, model_labels, lut)
    review.add_uncertainty(probs, image, sub_grid, slices)
    return lut[model_labels], notes


def plausibility_notes(labelmap: Volume, label_set, rows: Optional[Sequence[Any]] = None) -> List[str]:
    """Warnings for the orbit structures outside their normal adult band (``headseg.measure.bands``, the same
    band the volume table's flags use); ``rows``: the volume table of ``labelmap`` when already made."""
    from headseg.measure.bands import volume_band
    from headseg.measure.volumes import volume_table

    notes = []
    for row in volume_table(labelmap, label_set) if rows is None else rows:
        band = volume_band(row.structure)
        if row.derived or band is None or label_set.name != "orbit":
            continue
        if row.voxels == 0:
            notes.append(f"{row.name or row.structure}: nothing was segmented; check the image and draw it if needed.")
        elif not band.contains(row.volume_cm3):
            notes.append(f"{row.name or row.structure}: {row.volume_cm3:.2f} cm3 is outside the normal adult "
                         f"{band}; review the segmentation (an enlarged muscle is expected in thyroid eye disease).")
    return notes
