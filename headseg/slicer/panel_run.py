"""The shared panel's segmentation run: Segment starts it in a child process (``headseg.slicer.runs``), a
timer polls its progress and log, the same button cancels it, and its result is shown in the Segment
Editor and the volume table.

``qt`` and ``slicer`` are imported inside the methods, so this module imports in plain Python.
"""

from __future__ import annotations

import logging

from headseg.slicer.panel_base import PanelBase, _

__all__ = ["RunMixin"]


class RunMixin(PanelBase):
    """Start, poll, cancel and show a run (``self._run``, a ``headseg.slicer.runs`` run)."""

    def isRunning(self) -> bool:
        return self._run is not None and not self._run.finished

    def onApplyButton(self):
        import slicer

        if self.isRunning():
            self._run.cancel()
            self.setStatus(_("Cancelling..."))
            self.updateButtons()
            return
        if not self.ensurePythonPackages():
            return
        started, self._run = self.runAction(
            _("Could not start the segmentation: {error}"),
            self.logic.start,
            self._parameterNode.inputVolume,
            model=self.currentModel(),
            device=self.ui.deviceComboBox.currentText,
            tta=self.ui.ttaCheckBox.checked,
            output_node=self._parameterNode.outputSegmentation,
            show_3d=not slicer.app.commandOptions().noMainWindow,
            work_root=slicer.app.temporaryPath,
            **self.startOptions(),
        )
        if not started:
            return
        self.ui.logTextEdit.clear()
        self._logLinesShown = 0
        self.ui.progressBar.setValue(0)
        self.setStatus(_("Starting..."))
        self._pollTimer.start()
        self.updateButtons()

    def onPollTimer(self):
        run = self._run
        if run is None:
            self._pollTimer.stop()
            return
        try:
            run.poll()
        except Exception as error:  # never leave a timer firing tracebacks
            logging.exception("%s: polling failed", self.moduleName)
            self._pollTimer.stop()
            run.cancel()
            self.setStatus(_("Unexpected error: {error}").format(error=error), error=True)
            self.updateButtons()
            return
        for line in run.log[self._logLinesShown:]:
            self.ui.logTextEdit.appendPlainText(line)
        self._logLinesShown = len(run.log)
        self.ui.progressBar.setValue(int(round(100 * run.fraction)))
        self.setStatus(run.message, error=run.state == "failed")
        if run.finished:
            self._pollTimer.stop()
            if run.state == "succeeded":
                self.showResult(run)
            self.updateButtons()

    def showResult(self, run):
        import slicer

        editor = self.ui.segmentEditorWidget
        self._tableNode = run.table_node
        # first: the run measured its result once; the editor's node change below then finds it followed
        self.observeSegmentation(run.segmentation_node, run.measures)  # shows its uncertainty map, when ticked
        self.updateInputSelector()
        editor.setSegmentationNode(run.segmentation_node)
        editor.setSourceVolumeNode(run.input_node)
        slicer.util.setSliceViewerLayers(background=run.input_node, fit=False)
        self.ui.followupSegmentationSelector.setCurrentNode(run.segmentation_node)  # the newest scan, to compare
