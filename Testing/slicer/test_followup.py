""""Compare with earlier scan" on a real MRML scene (``headseg.slicer.followup`` through the panel's logic):
a phantom and the same phantom with one muscle enlarged by a known volume, two segmentations in the scene."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

from headseg.errors import InputError  # noqa: E402
from headseg.io import write_segmentation  # noqa: E402
from headseg.labels import get_label_set  # noqa: E402
from headseg.review.compare import CHANGE_COLUMNS  # noqa: E402
from headseg.slicer.logic import TaskLogic  # noqa: E402
from headseg.slicer.scene import node_from_volume  # noqa: E402
from headseg.slicer.segments import import_segmentation_file  # noqa: E402

ORBIT = get_label_set("orbit")
GROWN = "inferior_rectus_left"


class OrbitTaskLogic(TaskLogic):
    task = "orbit"


@pytest.fixture
def pair(mrml_scene, small_phantom, tmp_path):
    """(baseline node, follow-up node, true change in cm3 of the grown muscle): one CT, one muscle dilated."""
    from scipy import ndimage

    ct = node_from_volume(small_phantom.image, "CT")
    labels = small_phantom.labels.array
    muscle = labels == ORBIT.by_key(GROWN).label
    grown = ndimage.binary_dilation(muscle) & (labels == 0)
    later = labels.copy()
    later[grown] = ORBIT.by_key(GROWN).label
    nodes = []
    for name, array in (("baseline", labels), ("followup", later)):
        path = write_segmentation(small_phantom.labels.with_array(array), ORBIT, tmp_path / f"{name}.seg.nrrd")
        nodes.append(import_segmentation_file(path, ORBIT, ct, name=name))
    return nodes[0], nodes[1], grown.sum() * small_phantom.image.voxel_volume_mm3 / 1000.0


def test_change_table_has_the_grown_muscle_first_with_the_right_sign_and_side(pair, tmp_path):
    baseline, followup, change_cm3 = pair
    logic = OrbitTaskLogic()
    result = logic.compare(baseline, followup, register=False)
    table = result.table_node
    names = [table.GetColumnName(n) for n in range(table.GetNumberOfColumns())]
    assert names == list(CHANGE_COLUMNS)
    first = {name: table.GetTable().GetColumnByName(name).GetValue(0) for name in names}
    assert (first["structure"], first["side"], first["exceeds"]) == ("inferior_rectus", "left", "yes")
    assert first["change_cm3"] == pytest.approx(change_cm3, rel=1e-3) and first["change_pct"] > 0
    column = table.GetTable().GetColumnByName
    rest = {(column("structure").GetValue(n), column("side").GetValue(n)): column("change_cm3").GetValue(n)
            for n in range(1, table.GetNumberOfRows())}
    assert rest.pop(("extraocular_muscles", "left")) == pytest.approx(change_cm3, rel=1e-3), "the side's total"
    assert np.allclose(list(rest.values()), 0.0), "the unchanged structures do not change"
    assert "left inferior rectus" in result.summary.lower()
    # comparing again refills the same table
    assert logic.compare(baseline, followup, register=False).table_node is table
    # swapping the scans flips the sign
    swapped = logic.compare(followup, baseline, register=False)
    assert swapped.table_node is not table
    assert swapped.table_node.GetTable().GetColumnByName("change_cm3").GetValue(0) == pytest.approx(-change_cm3,
                                                                                                  rel=1e-3)
    path = logic.export_changes_csv(result, tmp_path / "changes")
    assert path.name == "changes.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CHANGE_COLUMNS) and len(rows) == table.GetNumberOfRows()
    grown = next(r for r in rows if (r["structure"], r["side"]) == ("inferior_rectus", "left"))
    assert float(grown["change_cm3"]) == pytest.approx(change_cm3, rel=1e-3) and grown["exceeds"] == "yes"


def test_registering_one_head_onto_itself_passes_the_bone_check(pair):
    baseline, followup, _change = pair
    result = OrbitTaskLogic().compare(baseline, followup, register=True)
    assert result.comparison.bone_dice is not None and result.comparison.bone_dice > 0.9


def test_refusals_say_why(pair, mrml_scene, small_phantom, tmp_path):
    baseline, followup, _change = pair
    logic = OrbitTaskLogic()
    with pytest.raises(InputError, match="same node"):
        logic.compare(baseline, baseline, register=False)
    with pytest.raises(InputError, match="Choose both"):
        logic.compare(baseline, None, register=False)
    with pytest.raises(InputError, match="Compare two segmentations first"):
        logic.export_changes_csv(None, tmp_path / "x.csv")
    pddca = get_label_set("pddca")
    organs = np.zeros(small_phantom.image.shape, np.uint8)
    organs[5:15, 20:40, 30:50] = pddca.by_key("mandible").label
    ct = node_from_volume(small_phantom.image, "CT2")
    path = write_segmentation(small_phantom.image.with_array(organs), pddca, tmp_path / "organs.seg.nrrd")
    other = import_segmentation_file(path, pddca, ct, name="organs")
    with pytest.raises(InputError, match="same kind"):
        logic.compare(baseline, other, register=False)
