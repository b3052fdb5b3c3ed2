"""Tests of the SYNTHETIC anatomical head CTs (headseg.synth): structure volumes against the published
values that headseg/synth/anatomy.py cites, HU per tissue, patient sides in any grid orientation, seeds,
partial volume, the field of view, the case folders training reads, and the orbit search on generated cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from geometry_asserts import centroid_lps
from scipy import ndimage

from headseg.geometry import Volume
from headseg.synth import HU_RANGES, ORBIT_LABELS, Tissue, make_synthetic_head, write_synthetic_cases
from headseg.synth.anatomy import MUSCLES, draw_anatomy
from headseg.synth.head import build_geometry, to_anat
from headseg.synth.imaging import choose_grid, draw_acquisition

# A small, quick grid: the front of the head around both orbits, 0.7 x 0.7 x 1.4 mm, upright.
QUICK = {"spacing": (0.7, 0.7, 1.4), "extent_mm": (160.0, 150.0, 70.0), "pose_deg": (0.0, 0.0, 0.0)}


def volumes_cm3(labels: Volume) -> dict:
    counts = np.bincount(labels.array.ravel(), minlength=11)
    return {v: counts[v] * labels.voxel_volume_mm3 / 1000.0 for v in range(1, 11)}


@pytest.fixture(scope="module")
def normal_case():
    return make_synthetic_head(3, ted=False, **QUICK)


@pytest.fixture(scope="module")
def ted_case():
    return make_synthetic_head(3, ted=True, **QUICK)


def _model_volumes(seed: int, ted=None):
    an = draw_anatomy(np.random.default_rng(seed), ted=ted)
    geom = build_geometry(an)
    out = {}
    for side, sg in geom["sides"].items():
        out[side] = {m: sg.muscles[m]["volume_mm3"] / 1000.0 for m in MUSCLES}
        out[side]["ON"] = sg.nerve["volume_mm3"] / 1000.0
    return an, geom, out


def test_drawn_volumes_follow_the_facts_over_many_heads():
    """Normal recti in the QC band 0.3-1.2 cm3, SR < IR < LR/MR on average (MRI ~510/570/670/710 mm3,
    back-calculated from Clark & Demer, IOVS 2016), intraorbital optic nerve 0.36-0.41 +- 0.08 cm3 (CT,
    Du 2019), total recti ~1.6-2.5 cm3 (between CT, Du 2019, and summed MRI volumes)."""
    normal = {m: [] for m in (*MUSCLES, "ON")}
    totals = []
    for seed in range(24):
        _, _, vols = _model_volumes(seed, ted=False)
        for side in vols.values():
            for m, v in side.items():
                normal[m].append(v)
            totals.append(sum(side[m] for m in MUSCLES))
    for m in MUSCLES:
        assert 0.3 <= min(normal[m]) and max(normal[m]) <= 1.2, m
    means = {m: float(np.mean(v)) for m, v in normal.items()}
    assert means["SR"] < means["IR"] < means["LR"] < means["MR"]
    assert 0.28 <= min(normal["ON"]) and max(normal["ON"]) <= 0.55  # 0.36-0.41 +- 0.08 (Du 2019)
    assert 0.35 <= means["ON"] <= 0.43
    assert 1.5 <= min(totals) and max(totals) <= 3.2
    assert 1.9 <= float(np.mean(totals)) <= 2.6


def test_ted_variant_enlarges_the_bellies_inferior_and_medial_most_often():
    """TED/control ratios SR complex 2.3, IR 2.1, MR 1.7, LR 1.6 (Cureus 2024); involvement SG 63 %,
    MR 61 %, IR 57 % (Nugent 1990). Forcing TED changes only the TED part of a seed's anatomy."""
    enlarged = {m: 0 for m in MUSCLES}
    ratios = []
    for seed in range(30):
        _, _, normal = _model_volumes(seed, ted=False)
        an, geom, ted = _model_volumes(seed, ted=True)
        for side in ("right", "left"):
            for m in MUSCLES:
                r = ted[side][m] / normal[side][m]
                assert 0.999 <= r <= 2.6
                enlarged[m] += r > 1.05
            ratios.append(sum(ted[side][m] for m in MUSCLES) / sum(normal[side][m] for m in MUSCLES))
            belly = geom["sides"][side].muscles
            assert all(0.3 <= belly[m]["belly_max_at"] <= 0.75 for m in MUSCLES)  # thickest at mid-orbit
    assert enlarged["IR"] > enlarged["LR"] and enlarged["MR"] > enlarged["LR"] and enlarged["SR"] > enlarged["LR"]
    assert np.mean(ratios) > 1.25 and max(ratios) > 1.6
    # asymmetric: the two sides of a TED head differ
    _, _, one = _model_volumes(1, ted=True)
    assert abs(sum(one["right"].values()) - sum(one["left"].values())) > 0.02


def test_labelled_volumes_on_the_image_grid(normal_case, ted_case):
    v = volumes_cm3(normal_case.labels)
    for side, values in ORBIT_LABELS.items():
        for m in MUSCLES:
            assert 0.3 <= v[values[m]] <= 1.2, (side, m, v[values[m]])
            # the painted volume (sub-voxel count): the drawn target less where the globe covers the muscle
            painted = normal_case.metadata["label_volumes_fine_mm3"][values[m]] / 1000.0
            assert v[values[m]] == pytest.approx(painted, rel=0.12), (side, m)
            model = normal_case.metadata["sides"][side]["muscle_model_volume_mm3"][m] / 1000.0
            assert 0.65 * model <= painted <= 1.05 * model, (side, m)
        assert 0.25 <= v[values["ON"]] <= 0.6
        total = sum(v[values[m]] for m in MUSCLES)
        assert 1.4 <= total <= 3.2
    t = volumes_cm3(ted_case.labels)
    assert sum(t[n] for n in range(1, 11) if n not in (5, 10)) > 1.15 * sum(v[n] for n in range(1, 11) if n not in (5, 10))
    assert set(np.unique(normal_case.labels.array)) == set(range(11))
    assert normal_case.image.array.dtype == np.int16 and normal_case.labels.array.dtype == np.uint8
    assert normal_case.image.same_geometry(normal_case.labels)


def test_belly_is_thickest_at_mid_orbit(normal_case):
    """Thickness of the medial and lateral recti (along x, per coronal row) along their course: thicker
    at mid-orbit than near the annulus and than the tendon on the globe."""
    labels = normal_case.labels
    si = labels.spacing[0]
    for side, values in ORBIT_LABELS.items():
        for m in ("MR", "LR"):
            mask = labels.array == values[m]
            thickness = mask.sum(axis=2).max(axis=0) * si  # per row j: thickest x-run over the slices
            rows = np.nonzero(thickness)[0]
            span = rows[-1] - rows[0] + 1
            front = thickness[rows[0]: rows[0] + max(2, span // 7)].mean()
            back = thickness[rows[-1] - max(2, span // 7) + 1: rows[-1] + 1].mean()
            middle = np.median(thickness[rows[0] + span // 3: rows[0] + 2 * span // 3])
            assert middle > front and middle > back, (side, m, front, middle, back)


def test_hu_of_each_tissue_in_its_range():
    case = make_synthetic_head(5, noise=False, artefacts=False, **QUICK)
    hu = case.metadata["hu"]
    for code, (_, _, lo, hi, _) in HU_RANGES.items():
        assert lo <= hu[Tissue.NAMES[code]] <= hi, Tissue.NAMES[code]
    tissues, image = case.tissues.array, case.image.array.astype(float)
    checks = {Tissue.ORBITAL_FAT: (-125, -60), Tissue.VITREOUS: (-5, 28), Tissue.BRAIN: (20, 46),
              Tissue.EOM: (20, 70), Tissue.SOFT: (20, 65), Tissue.SINUS_AIR: (-1010, -900)}
    for code, (lo, hi) in checks.items():
        mask = ndimage.binary_erosion(tissues == code, iterations=1)
        assert mask.sum() > 50, Tissue.NAMES[code]
        assert lo <= image[mask].mean() <= hi, (Tissue.NAMES[code], image[mask].mean())
        assert abs(image[mask].mean() - hu[Tissue.NAMES[code]]) < 15.0, Tissue.NAMES[code]
    bone = ndimage.binary_erosion(tissues == Tissue.BONE, iterations=1)
    assert image[bone].mean() > 500  # cortical 700-1800 HU, thin plates blurred
    lens = tissues == Tissue.LENS
    assert image[lens].mean() > image[tissues == Tissue.VITREOUS].mean() + 30


def test_noise_and_artefacts_change_the_look_not_the_labels(normal_case):
    clean = make_synthetic_head(3, ted=False, noise=False, artefacts=False, **QUICK)
    np.testing.assert_array_equal(clean.labels.array, normal_case.labels.array)
    fat = ndimage.binary_erosion(clean.tissues.array == Tissue.ORBITAL_FAT, iterations=2)
    assert normal_case.image.array[fat].std() > clean.image.array[fat].std() + 2.0


@pytest.mark.parametrize("direction", ["lps", "ras", "oblique"])
def test_left_structures_lie_at_larger_lps_x(direction):
    from headseg.synth.phantoms import rotation_matrix_deg

    matrix = {"lps": np.eye(3), "ras": np.diag([-1.0, -1.0, 1.0]), "oblique": rotation_matrix_deg((8.0, -6.0, 15.0))}[direction]
    case = make_synthetic_head(7, direction=matrix, spacing=(1.2, 1.2, 2.5), extent_mm=(170.0, 150.0, 100.0),
                               pose_deg=(4.0, -3.0, 6.0))
    labels = case.labels
    for m in (*MUSCLES, "ON"):
        right = centroid_lps(labels, labels.array == ORBIT_LABELS["right"][m])
        left = centroid_lps(labels, labels.array == ORBIT_LABELS["left"][m])
        assert left[0] > 10.0 > -10.0 > right[0], (direction, m)
    assert case.globe_centers_lps["left"][0] > 20.0 > -20.0 > case.globe_centers_lps["right"][0]
    marker = case.tissues.array == Tissue.MARKER
    assert marker.sum() > 3 and centroid_lps(case.tissues, marker)[0] > 50.0  # the bead is on the patient's left
    # lateral recti lie lateral of the medial recti on each side
    lr_r, mr_r = (centroid_lps(labels, labels.array == ORBIT_LABELS["right"][m])[0] for m in ("LR", "MR"))
    lr_l, mr_l = (centroid_lps(labels, labels.array == ORBIT_LABELS["left"][m])[0] for m in ("LR", "MR"))
    assert lr_r < mr_r < 0 < mr_l < lr_l


def test_seeds_are_reproducible_and_differ():
    kw = {"spacing": (1.2, 1.2, 2.5), "extent_mm": (160.0, 140.0, 60.0)}
    a, b = make_synthetic_head(11, **kw), make_synthetic_head(11, **kw)
    np.testing.assert_array_equal(a.image.array, b.image.array)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    assert a.metadata == {**b.metadata, "seconds": a.metadata["seconds"]}
    c = make_synthetic_head(12, pose_deg=a.metadata["pose_deg"], **kw)
    assert not np.array_equal(a.labels.array, c.labels.array)
    assert a.metadata["sides"] != c.metadata["sides"] and a.metadata["hu"] != c.metadata["hu"]


def test_same_anatomy_on_two_grids_and_partial_volume_of_thick_slices():
    """Thin and thick slices of one head: the same label volumes (majority of sub-voxels), and thick
    slices mix tissues in more voxels (partial volume), even without blur."""
    sharp = {"blur_mm": (0.0, 0.0)}
    kw = {"extent_mm": (150.0, 120.0, 60.0), "pose_deg": (0.0, 0.0, 0.0), "noise": False, "artefacts": False,
          "acquisition": sharp}
    thin = make_synthetic_head(4, spacing=(0.8, 0.8, 0.5), **kw)
    mid = make_synthetic_head(4, spacing=(0.8, 0.8, 1.5), **kw)
    thick = make_synthetic_head(4, spacing=(0.8, 0.8, 3.0), **kw)
    v_thin, v_mid, v_thick = (volumes_cm3(c.labels) for c in (thin, mid, thick))
    for n in range(1, 11):
        assert v_mid[n] == pytest.approx(v_thin[n], rel=0.15), n
    # 3 mm slices: thin plates (the superior and inferior recti lie flat) lose or gain whole slices,
    # but the totals hold
    assert sum(v_thick.values()) == pytest.approx(sum(v_thin.values()), rel=0.2)
    pure = np.array(sorted(set(thin.metadata["hu"].values())))

    def mixed_fraction(case):
        values = case.image.array.astype(float)
        region = np.isin(case.tissues.array, (Tissue.ORBITAL_FAT, Tissue.EOM, *Tissue.GLOBE, Tissue.NERVE_SHEATH))
        distance = np.abs(values[region][:, None] - pure[None, :]).min(axis=1)
        return float(np.mean(distance > 4.0))

    assert mixed_fraction(thick) > mixed_fraction(thin) + 0.1


def test_field_of_view_cuts_the_head_but_keeps_both_orbits():
    """Drawn grids: posterior, lateral, upper and lower cuts vary; every labelled structure stays in view."""
    cut_back, full = 0, 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        an = draw_anatomy(rng)
        geom = build_geometry(an)
        acq = draw_acquisition(rng, an, geom)
        grid = choose_grid(acq, an, geom, None, None, None, None, 8e6)
        from headseg.synth.phantoms import rotation_matrix_deg

        rot = rotation_matrix_deg(acq["pose_deg"])
        spacing = np.array(grid["spacing"])
        lo = np.array(grid["origin"])
        hi = lo + (np.array(grid["shape"][::-1]) - 1) * spacing
        assert np.prod(grid["shape"]) <= 8e6 * 1.05
        for sg in geom["sides"].values():
            blo, bhi = sg.label_box
            corners = np.array([[a, b, c] for a in (blo[0], bhi[0]) for b in (blo[1], bhi[1]) for c in (blo[2], bhi[2])])
            lps = (rot @ to_anat(sg.sign, corners).T).T
            assert np.all(lps >= lo - 1e-6) and np.all(lps <= hi + 1e-6), seed
        back = hi[1] > an["head"]["b"] + 5
        full += back
        cut_back += not back
        assert 0.3 <= spacing[0] <= 1.0 and 0.5 <= spacing[2] <= 3.0
    assert cut_back >= 5 and full >= 3


def test_written_cases_are_read_by_training(tmp_path):
    from headseg.labels import get_label_set
    from training.datasets import discover_records, load_case

    folders = write_synthetic_cases(str(tmp_path), 1, seed=21, spacing=(1.0, 1.0, 2.0),
                                    extent_mm=(160.0, 150.0, 60.0))
    meta = json.loads((tmp_path / "synth_000" / "meta.json").read_text(encoding="utf-8"))
    assert meta["synthetic"] is True and len(meta["contoured"]) == 10
    records = discover_records(tmp_path)
    assert [r.case for r in records] == ["synth_000"] and len(folders) == 1
    loaded = load_case(records[0], get_label_set("orbit"))
    assert len(loaded.annotated) == 10
    assert loaded.image.same_geometry(loaded.labels)
    reference = make_synthetic_head(21, spacing=(1.0, 1.0, 2.0), extent_mm=(160.0, 150.0, 60.0))
    np.testing.assert_array_equal(loaded.labels.array, reference.labels.array)


def test_cli_writes_anatomical_phantoms(tmp_path, monkeypatch):
    from headseg import cli
    from headseg import synth as synth_module

    calls = {}

    def small(out_dir, n_cases, seed=0, progress=None, **kw):
        calls["args"] = (n_cases, seed)
        return write_synthetic_cases(out_dir, n_cases, seed=seed, progress=progress, spacing=(1.2, 1.2, 2.5),
                                     extent_mm=(160.0, 150.0, 60.0))

    monkeypatch.setattr(synth_module, "write_synthetic_cases", small)
    rc = cli.main(["phantom", "--kind", "anatomical", "-o", str(tmp_path / "out"), "--cases", "1", "--seed", "3",
                   "--progress-format", "none"])
    assert rc == 0 and calls["args"] == (1, 3)
    assert (tmp_path / "out" / "synth_000" / "image.nrrd").is_file()
    assert (tmp_path / "out" / "synth_000" / "labels.nrrd").is_file()


def test_orbit_search_finds_both_orbits_on_generated_cases():
    """The existing search (headseg.locate.search.locate_orbits) on drawn cases (voxel size, pose, field of
    view, headrest, noise, streaks all random). benchmarks/bench_synth.py measures the rate on more."""
    from headseg.locate.search import OrbitNotFoundError, locate_orbits

    found = 0
    seeds = (2, 3)
    for seed in seeds:
        case = make_synthetic_head(seed, max_voxels=2.5e6)
        try:
            for loc in locate_orbits(case.image):
                assert np.linalg.norm(loc.globe_center_lps - case.globe_centers_lps[loc.side]) < 5.0
            found += 1
        except OrbitNotFoundError:
            pass
    assert found == len(seeds), f"orbit search found both orbits in {found} of {len(seeds)} synthetic cases"
