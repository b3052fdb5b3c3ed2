"""The shared panel's review of a segmentation: the one the Segment Editor shows is followed (its
volume table is recomputed ~0.5 s after each edit, for the edited segments only), its uncertainty map
can be shown over the CT, a clicked row moves the views to where that structure was most uncertain, and
its volumes are exported as CSV.

``qt`` and ``slicer`` are imported inside the methods, so this module imports in plain Python.
"""

from __future__ import annotations

import os

from headseg.slicer.panel_base import PanelBase, _
from headseg.slicer.runs import PANEL_REQUIREMENTS

__all__ = ["ReviewMixin"]


class ReviewMixin(PanelBase):
    """Follow the reviewed segmentation (``self._observedSegmentation``) with its volume table and review aids."""

    # -- the editor's segmentation, its volume table -----------------------------------------------
    def onEditorNodeModified(self, caller=None, event=None):
        segmentation = self._editorNode.GetSegmentationNode() if self._editorNode else None
        if segmentation is not self._observedSegmentation:
            self.observeSegmentation(segmentation)

    def observeSegmentation(self, segmentationNode, measures=None):
        """Follow the reviewed segmentation: the volumes are recomputed ~0.5 s after each edit, for the
        edited segments only. ``measures`` just taken of it (a run's result) are not taken again."""
        self._tableTimer.stop()
        self._observedSegmentation = segmentationNode
        self._follower.observe(segmentationNode, measures)
        self.updateReviewedList()
        self.updateVolumeTable()
        self.updateUncertaintyLayer()

    def stopFollowing(self):
        """No more table updates until the panel follows a segmentation again."""
        self._tableTimer.stop()
        self._follower.stop()
        self._observedSegmentation = None

    def updateVolumeTable(self):
        """Recompute the volumes of the reviewed segmentation into its table (a node is never made here)."""
        self._tableTimer.stop()
        self._follower.done()
        segmentation = self._observedSegmentation
        self._refreshingTable = True  # refilling the table re-emits its selection: not a click
        try:
            if segmentation is None or segmentation.GetScene() is None:
                self._tableNode = None
                self.ui.volumeTableView.setMRMLTableNode(None)
                self.ui.volumeSummaryLabel.text = ""
                self.updateButtons()
                return
            # runs from a timer: a failure is reported, and the table shows what it showed before
            updated, result = self.runAction(_("The volumes could not be updated: {error}"),
                                             self.logic.refresh_volumes, segmentation, follower=self._follower)
            if updated:
                self.showVolumes(result)
        finally:
            self._refreshingTable = False
        self.updateButtons()

    def showVolumes(self, update):
        self._tableNode = update.table_node
        self.ui.volumeTableView.setMRMLTableNode(update.table_node)
        # rows are re-sorted by doubt after each edit: a kept selection would point at another structure
        self.ui.volumeTableView.clearSelection()
        if update.table_node is not None:
            self.ui.volumeTableView.resizeColumnsToContents()
            self.ui.volumeSummaryLabel.text = update.summary
        else:
            self.ui.volumeSummaryLabel.text = " ".join([update.summary, _(
                "Press 'Make volume table' to list every structure in a table that follows your edits.")])

    def onCreateTableButton(self):
        segmentation = self._observedSegmentation
        if segmentation is None:
            self.setStatus(_("Select a segmentation in the editor first."), error=True)
            return
        if not self.ensurePythonPackages(PANEL_REQUIREMENTS):
            return
        made, result = self.runAction(_("The volume table could not be made: {error}"),
                                      self.logic.refresh_volumes, segmentation, create_table=True,
                                      follower=self._follower)
        if made:
            self.showVolumes(result)
            self.setStatus(_("Volume table '{name}' added next to the segmentation.").format(
                name=result.table_node.GetName()))
        self.updateButtons()

    def onExportCsvButton(self):
        import qt
        import slicer

        segmentation = self._observedSegmentation
        if segmentation is None:
            self.setStatus(_("There are no volumes yet: segment the image or select a segmentation."), error=True)
            return
        if not self.ensurePythonPackages(PANEL_REQUIREMENTS):
            return
        name = self._tableNode.GetName() if self._tableNode is not None else f"{segmentation.GetName()} volumes"
        default = os.path.join(qt.QDir.homePath(), name + ".csv")
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export volumes"), default,
                                              _("CSV files (*.csv)"))
        if not path:
            return
        # the logic recomputes first, so the file holds the segmentation as it is now (no stale numbers)
        exported, written = self.runAction(_("Export failed: {error}"), self.logic.export_csv, segmentation, path,
                                           follower=self._follower)
        self.updateVolumeTable()
        if exported:
            self.setStatus(_("Volumes saved to {path}").format(path=written))

    def updateReviewedList(self):
        # the user ticks what was really checked
        self.fillChecklist(self.ui.reviewedListWidget,
                           self.logic.reviewable_structures(self._observedSegmentation), checked=False)

    # -- review aids: the uncertainty map, where to look first -------------------------------------
    def updateUncertaintyLayer(self):
        """The reviewed segmentation's uncertainty map as the slice views' foreground, when ticked."""
        import slicer

        shown, node = self.runAction(_("The uncertainty map could not be shown: {error}"),
                                     self.logic.show_uncertainty, self._observedSegmentation, slicer.mrmlScene,
                                     self.ui.showUncertaintyCheckBox.checked, self.ui.uncertaintyOpacitySlider.value)
        hasMap = self.logic.uncertainty_node(self._observedSegmentation) is not None
        self.ui.showUncertaintyCheckBox.enabled = hasMap
        self.ui.uncertaintyOpacitySlider.enabled = shown and node is not None
        self.ui.showUncertaintyCheckBox.toolTip = _(
            "Show where the model doubted (warm colours, lighter = more doubt) over the CT in the slice views."
        ) if hasMap else _("This segmentation has no uncertainty map (segment it with HeadSeg to get one).")

    def onShowUncertaintyToggled(self, checked=None):
        self.updateUncertaintyLayer()

    def onUncertaintyOpacityChanged(self, value):
        import slicer

        self.logic.set_uncertainty_opacity(slicer.mrmlScene, value)

    def onVolumeRowSelected(self):
        """A clicked row: the slice views move to that structure's most uncertain region."""
        if self._refreshingTable or self._tableNode is None:
            return
        # the selected view rows are MRML table rows: no sorting in the proxy, column names as the header
        # (fill_table_node), as qMRMLTableView::deleteRow itself passes selectedIndexes() to the model
        indexes = self.ui.volumeTableView.selectionModel().selectedIndexes()
        if not indexes:
            return
        looked, point = self.runAction(_("Could not move the views: {error}"), self.logic.look_at_row,
                                       self._observedSegmentation, self._tableNode, indexes[0].row())
        if looked and point is None:
            self.setStatus(_("That structure is empty: nothing to look at."))
