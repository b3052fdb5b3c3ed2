"""The shared panel's model choice: the task's models, in HeadSeg's folders and in those the user added,
which are remembered (QSettings) for both modules.

``qt`` and ``slicer`` are imported inside the methods, so this module imports in plain Python.
"""

from __future__ import annotations

import os
from typing import List, Optional

from headseg.errors import HeadSegError
from headseg.slicer.panel_base import PanelBase, _

__all__ = ["ModelChoiceMixin", "model_folders_from_setting", "SETTINGS_MODEL_FOLDERS"]

#: QSettings key of the model folders the user added (both modules; each lists only its task's models).
SETTINGS_MODEL_FOLDERS = "HeadSeg/ExtraModelFolders"


def model_folders_from_setting(text: Optional[str], separator: str = os.pathsep) -> List[str]:
    """The saved model folders that still exist (a folder deleted since is dropped silently)."""
    return [folder for folder in str(text or "").split(separator) if folder and os.path.isdir(folder)]


class ModelChoiceMixin(PanelBase):
    """The model combo box: filled from the logic, a folder added by the user, the chosen model."""

    def extraModelFolders(self) -> List[str]:
        import qt

        return model_folders_from_setting(qt.QSettings().value(SETTINGS_MODEL_FOLDERS, ""))

    def populateModels(self):
        combo = self.ui.modelComboBox
        combo.clear()
        try:
            for label, folder in self.logic.models(self.extraModelFolders()):
                combo.addItem(label, folder)
        except HeadSegError as error:
            self.setStatus(str(error), error=True)
        if combo.count == 0:
            self.setStatus(self.noModelMessage, error=True)
        self.updateButtons()

    def onAddModelFolderButton(self):
        import qt
        import slicer

        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(),
                                                     _("Choose a model package folder"))
        if not folder:
            return
        try:
            label, path = self.logic.add_model_folder(folder)
        except HeadSegError as error:
            self.setStatus(str(error), error=True)
            return
        folders = self.extraModelFolders()
        if path not in folders:
            qt.QSettings().setValue(SETTINGS_MODEL_FOLDERS, os.pathsep.join(folders + [path]))
        self.populateModels()
        index = self.ui.modelComboBox.findData(path)
        if index < 0:  # a model with the same name is already listed from another folder
            self.ui.modelComboBox.addItem(label, path)
            index = self.ui.modelComboBox.count - 1
        self.ui.modelComboBox.setCurrentIndex(index)
        self.setStatus(_("Model added: {label}").format(label=label))

    def currentModel(self) -> Optional[str]:
        index = self.ui.modelComboBox.currentIndex
        return self.ui.modelComboBox.itemData(index) if index >= 0 else None
