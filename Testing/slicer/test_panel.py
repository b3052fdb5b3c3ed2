"""The shared panel's plain-Python parts (``headseg.slicer.panel``); its Qt side is checked statically
against both modules' .ui files in ``test_module_contract.py``."""

from __future__ import annotations

import os

from headseg.slicer.panel import SegmentationPanelMixin
from headseg.slicer.panel_models import SETTINGS_MODEL_FOLDERS, model_folders_from_setting


def test_saved_model_folders_keep_only_existing_folders_in_order(tmp_path):
    first, second = tmp_path / "b_models", tmp_path / "a_models"
    first.mkdir()
    second.mkdir()
    (tmp_path / "a_file").write_text("not a folder")
    saved = os.pathsep.join([str(first), "", str(tmp_path / "deleted"), str(tmp_path / "a_file"), str(second)])
    assert model_folders_from_setting(saved) == [str(first), str(second)]
    assert model_folders_from_setting(None) == [] and model_folders_from_setting("") == []


def test_panel_leaves_module_specific_values_to_the_widgets():
    for name in ("logicClass", "segmentButtonText", "noModelMessage", "datasetFolderSetting"):
        assert getattr(SegmentationPanelMixin, name) is None, name
    assert SETTINGS_MODEL_FOLDERS == "HeadSeg/ExtraModelFolders"  # users' saved folders keep working
    assert SegmentationPanelMixin.startOptions(object()) == {}
