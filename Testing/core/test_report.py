"""The batch report (headseg.review.report, ``headseg report``, ``segment --report``) rendered by a real browser:
headless Chromium opens the page from a file, its script runs, a screenshot is not blank, the DOM has one
section per case, the summary is sorted by flag count and the outlier is outlined."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from headseg.cli import main
from headseg.io import write_segmentation, write_volume
from headseg.labels import get_label_set
from headseg.measure.volumes import volume_table, write_volume_csv
from headseg.review.report import collect_cases, render_report
from headseg.synth.phantoms import make_head_phantom

ORBIT = get_label_set("orbit")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _browser(*args: str, profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        if os.environ.get("HEADSEG_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required here (HEADSEG_REQUIRE_BROWSER is set) but was not found.")
        pytest.skip("Chromium is not installed (apt-get install chromium); .ci/run installs it.")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Five cases written as 'segment' writes them, from phantom truth; case_4's left SR is tripled
    (an outlier), case_2 carries two flags."""
    folder = tmp_path_factory.mktemp("results")
    phantom = make_head_phantom(seed=2, spacing=(0.8, 0.8, 1.5))
    write_volume(phantom.image, folder / "ct.nrrd")
    for n in range(5):
        labels = phantom.labels.array.copy()
        if n == 4:
            from scipy import ndimage

            sr = labels == ORBIT.by_key("superior_rectus_left").label
            grown = ndimage.binary_dilation(sr, iterations=2) & (labels == 0)
            labels[grown] = ORBIT.by_key("superior_rectus_left").label
        labelmap = phantom.labels.with_array(labels)
        name = f"case_{n}"
        write_segmentation(labelmap, ORBIT, folder / f"{name}.seg.nrrd")
        rows = volume_table(labelmap, ORBIT)
        if n == 2:
            from dataclasses import replace

            rows = [replace(r, flags="volume_low;asymmetric") if r.key == "optic_nerve_right" else r for r in rows]
        write_volume_csv(rows, folder / f"{name}_volumes.csv")
        (folder / f"{name}_run.json").write_text(json.dumps({"input": str(folder / "ct.nrrd"), "model": "truth",
                                                             "device": "cpu", "seconds": 1.0 + n}))
    return folder


def test_render_sorts_by_flags_and_outlines_the_outlier(results):
    page = render_report(collect_cases(results))
    summary = page.split("<table class='sortable' id='summary'>")[1].split("</table>")[0]
    first_row = summary.split("<tbody>")[1].split("</tr>")[0]
    assert "case_2" in first_row  # the flagged case first
    outlier_rows = [row for row in summary.split("<tr") if "class=\"outlier\"" in row]
    assert len(outlier_rows) == 1 and "case_4" in outlier_rows[0]
    assert not re.search(r"(src|href)=['\"]https?:", page)  # self-contained: nothing from the network
    # The flags in words, as the end of a run says them.
    case_2 = page.split("<section class='case' id='case-case_2'>")[1].split("</section>")[0]
    assert "<p class='note flagged'>right optic nerve: volume below the plausible range (" in case_2
    assert re.search(r"asymmetric \(\d\.\d\d of the left\)", case_2)


def test_chromium_renders_the_page(results, tmp_path):
    from headseg.review.report import write_report

    page = write_report(results, tmp_path / "report.html")
    dom = _browser("--dump-dom", page.as_uri(), profile=tmp_path / "p1").stdout
    assert 'data-ready="1"' in dom, "the page's script did not run to its end"
    assert re.search(r'<pre id="js-errors"></pre>', dom), "the page recorded script errors"
    assert dom.count('<section class="case"') == 5
    assert len(re.findall(r'<img alt="(axial|coronal|sagittal) slice"', dom)) == 15  # three planes per case
    shot = tmp_path / "shot.png"
    _browser("--window-size=1200,900", f"--screenshot={shot}", page.as_uri(), profile=tmp_path / "p2")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.std() > 0.1 and (pixels < 0.5).mean() > 0.02  # text, tables and CT slices, not a blank page


def test_segment_report_and_report_command(tmp_path):
    """Through the CLI: segment --report writes report.html and a run record; 'headseg report' refuses
    to overwrite it and writes another file on request."""
    from headseg.synth.phantoms import write_phantom_cases

    write_phantom_cases(str(tmp_path / "in"), 1, seed=4, spacing=(0.8, 0.8, 1.5))
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "in"), "--task", "orbit", "-o", str(out), "--report",
                 "--progress-format", "none"]) == 0
    record = json.loads((out / "phantom_000_run.json").read_text(encoding="utf-8"))
    assert record["model"] and record["device"] == "cpu" and record["seconds"] > 0
    assert Path(record["input"]).is_file()
    assert (out / "phantom_000_uncertainty.nrrd").is_file()
    header = (out / "phantom_000_volumes.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "structure,side,voxels,volume_cm3,doubt,flags,key"
    assert "<section class='case' id='case-phantom_000'>" in (out / "report.html").read_text(encoding="utf-8")
    assert main(["report", str(out), "-o", str(out / "report.html")]) == 2
    assert main(["report", str(out), "-o", str(tmp_path / "again.html")]) == 0


def test_no_uncertainty_leaves_doubt_empty(tmp_path):
    from headseg.synth.phantoms import write_phantom_cases

    write_phantom_cases(str(tmp_path / "in"), 1, seed=4, spacing=(0.8, 0.8, 1.5))
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "in"), "--task", "orbit", "-o", str(out), "--no-uncertainty",
                 "--progress-format", "none"]) == 0
    assert not (out / "phantom_000_uncertainty.nrrd").exists()
    rows = (out / "phantom_000_volumes.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert rows and all(row.split(",")[4] == "" for row in rows)


# -- pictures in the patient's orientation, whatever the file's -----------------------------------------
def _turned(volume, code: str):
    """``volume`` stored in another orientation (SimpleITK's DICOMOrient): the same patient, another array."""
    import SimpleITK as sitk

    from headseg.geometry import Volume

    return Volume.from_sitk(sitk.DICOMOrient(volume.to_sitk(), code))


def _pictures(page: str, case: str):
    """The decoded thumbnails (RGB arrays) of ``case`` on a report page."""
    import base64
    import io

    import matplotlib.image

    section = page.split(f"<section class='case' id='case-{case}'>")[1].split("</section>")[0]
    return [matplotlib.image.imread(io.BytesIO(base64.b64decode(png)), format="png")
            for png in re.findall(r"src='data:image/png;base64,([^']+)'", section)]


def test_one_patient_from_nifti_and_from_dicom_gives_the_same_pictures(tmp_path):
    """The same CT and segmentation as a DICOM series (read back by HeadSeg's reader) and as NIfTI files
    stored right-to-left, front-to-back and feet-first, or with the axes permuted: the report turns each
    to the patient's orientation, so the pictures are equal pixel for pixel."""
    import numpy as np

    from headseg.io import read_volume
    from headseg.io.dicom_series import write_dicom_series
    from headseg.review.report import write_report

    phantom = make_head_phantom(seed=3, spacing=(1.0, 1.0, 2.0))
    results = tmp_path / "results"
    results.mkdir()
    write_dicom_series(phantom.image.with_array(phantom.image.array.astype(np.int16)), tmp_path / "dicom")
    dicom = read_volume(tmp_path / "dicom")
    assert dicom.same_geometry(phantom.labels, tol=1e-3)
    cases = {"dicom": (tmp_path / "dicom", dicom, phantom.labels)}
    for name, code in (("nifti", "RAI"), ("nifti_permuted", "SRA")):
        ct, labels = _turned(dicom, code), _turned(phantom.labels, code)
        write_volume(ct, tmp_path / f"{name}.nii.gz")
        back = read_volume(tmp_path / f"{name}.nii.gz")
        assert back.same_geometry(labels, tol=1e-3) and not np.allclose(back.direction, dicom.direction)
        assert back.array.shape != dicom.array.shape or not np.array_equal(back.array, dicom.array)
        cases[name] = (tmp_path / f"{name}.nii.gz", back, labels)
    for name, (source, _ct, labels) in cases.items():
        write_segmentation(labels, ORBIT, results / f"{name}.seg.nrrd")
        write_volume_csv(volume_table(labels, ORBIT), results / f"{name}_volumes.csv")
        (results / f"{name}_run.json").write_text(json.dumps({"input": str(source), "model": "truth"}))
    page = write_report(results, tmp_path / "report.html").read_text(encoding="utf-8")
    reference = _pictures(page, "dicom")
    assert len(reference) == 3 and all(p.shape[0] >= 300 and p.shape[1] >= 300 for p in reference)
    for name in ("nifti", "nifti_permuted"):
        pictures = _pictures(page, name)
        assert len(pictures) == 3
        for view, (ours, theirs) in enumerate(zip(pictures, reference)):
            assert ours.shape == theirs.shape and np.array_equal(ours, theirs), f"{name}: view {view} differs"
    legend = page.split("<section class='case' id='case-nifti'>")[1].split("</section>")[0]
    assert "class='legend'" in legend and "superior_rectus_left" in legend and "left superior rectus" in legend


@pytest.mark.parametrize("code", ["LPS", "RAS", "RAI", "LPI", "SRA", "PIL", "ASL"])
def test_patient_axes_puts_head_back_and_left_on_growing_indices(code):
    """A voxel at the patient's left, back and top lands at the end of axes 2, 1 and 0 however it was
    stored, with each axis's spacing carried along."""
    import numpy as np

    from headseg.geometry import Volume, patient_axes

    array = np.zeros((6, 8, 10), np.int16)
    array[5, 7, 9] = 1  # k, j, i at their ends: on an identity grid, the patient's top, back and left corner
    volume = _turned(Volume(array, spacing=(0.5, 0.7, 2.0)), code)
    turned, spacing = patient_axes(volume)
    assert turned.shape == (6, 8, 10) and spacing == pytest.approx((2.0, 0.7, 0.5))
    assert np.argwhere(turned == 1).tolist() == [[5, 7, 9]]
