"""The shared panel's "Compare with earlier scan": the change table of two segmentations of one patient
(``headseg.slicer.followup`` through the logic) and its CSV export.

``qt`` and ``slicer`` are imported inside the methods, so this module imports in plain Python.
"""

from __future__ import annotations

import os

from headseg.slicer.panel_base import PanelBase, _
from headseg.slicer.runs import PANEL_REQUIREMENTS

__all__ = ["CompareMixin"]


class CompareMixin(PanelBase):
    """Compare two segmentations (``self._changeResult``: the last comparison)."""

    def onCompareButton(self):
        import slicer

        if not self.ensurePythonPackages(PANEL_REQUIREMENTS):
            return
        with slicer.util.WaitCursor():  # reading both label maps and registering the CTs takes seconds
            compared, result = self.runAction(
                _("The comparison failed: {error}"), self.logic.compare,
                self.ui.baselineSegmentationSelector.currentNode(), self.ui.followupSegmentationSelector.currentNode(),
                register=self.ui.registerScansCheckBox.checked)
        if compared:
            self.showChanges(result)
            self.setStatus(_("Change table '{name}' added next to the later segmentation.").format(
                name=result.table_node.GetName()))
        self.updateButtons()

    def showChanges(self, result):
        self._changeResult = result
        self.ui.changeTableView.setMRMLTableNode(result.table_node if result is not None else None)
        if result is not None:
            self.ui.changeTableView.resizeColumnsToContents()
        self.ui.changeSummaryLabel.text = result.summary if result is not None else ""
        self.updateButtons()

    def onExportChangeCsvButton(self):
        import qt
        import slicer

        if self._changeResult is None:
            self.setStatus(_("Compare two segmentations first."), error=True)
            return
        if not self.ensurePythonPackages(PANEL_REQUIREMENTS):
            return
        default = os.path.join(qt.QDir.homePath(), self._changeResult.table_node.GetName() + ".csv")
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export changes"), default,
                                              _("CSV files (*.csv)"))
        if not path:
            return
        exported, written = self.runAction(_("Export failed: {error}"), self.logic.export_changes_csv,
                                           self._changeResult, path)
        if exported:
            self.setStatus(_("Changes saved to {path}").format(path=written))
