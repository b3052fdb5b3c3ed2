"""The shared panel's "Add to training set": the reviewed case (image, segmentation, the structures the
user checked) written to a dataset folder, which is remembered per module (QSettings).

``qt`` is imported inside the methods, so this module imports in plain Python.
"""

from __future__ import annotations

from headseg.slicer.panel_base import PanelBase, _
from headseg.slicer.runs import PANEL_REQUIREMENTS

__all__ = ["TrainingSetMixin"]


class TrainingSetMixin(PanelBase):
    """Add the reviewed case to a training set; the dataset folder is remembered under the widget's
    ``datasetFolderSetting`` (a class attribute of the panel that each widget sets)."""

    def onDatasetDirectoryChanged(self, directory):
        import qt

        qt.QSettings().setValue(self.datasetFolderSetting, directory)

    def onAddToTrainingSetButton(self):
        if not self.ensurePythonPackages(PANEL_REQUIREMENTS):  # the case is written with pynrrd
            return
        reviewed = self.checkedItemData(self.ui.reviewedListWidget)
        volume = self._editorNode.GetSourceVolumeNode()
        added, case = self.runAction(_("Adding the case failed: {error}"), self.logic.add_to_training_set,
                                     volume or self._parameterNode.inputVolume, self._observedSegmentation,
                                     self.ui.datasetDirectoryButton.directory, reviewed)
        if not added:
            return
        message = _("Added case {case} to {folder}.").format(case=case.case, folder=case.manifest.parent)
        self.setStatus(" ".join([message] + case.warnings))
