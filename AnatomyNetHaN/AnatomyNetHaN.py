"""AnatomyNetHaN: one click to segment head-and-neck organs at risk in a CT (AnatomyNet).

The panel is a thin view over :class:`AnatomyNetHaNLib.HeadNeckLogic` (Qt-free, shared code in
``headseg.slicer_glue``). The model runs in a separate process (``headseg segment``), polled by a
timer, so Slicer stays responsive and the run can be cancelled at any time.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _ensure_headseg_importable():
    """The extension installs ``headseg`` next to the modules; a source checkout added through
    'Additional module paths' has it one folder up."""
    try:
        import headseg  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_ensure_headseg_importable()

from AnatomyNetHaNLib.logic import SEGMENT_BUTTON_TEXT, HeadNeckLogic  # noqa: E402

from headseg.errors import HeadSegError  # noqa: E402

SETTINGS_MODEL_FOLDERS = "HeadSeg/ExtraModelFolders"
SETTINGS_DATASET_FOLDER = "HeadSeg/HeadNeckDatasetFolder"
EDITOR_NODE_TAG = "AnatomyNetHaNSegmentEditor"
POLL_INTERVAL_MS = 200
TABLE_DELAY_MS = 500


#
# Module
#
class AnatomyNetHaN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("AnatomyNet Head and Neck")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["HeadSeg contributors"]
        self.parent.helpText = _(
            "Segments head-and-neck organs at risk (brain stem, optic chiasm and nerves, mandible, parotid "
            "and submandibular glands, or the OpenKBP organs, depending on the model) in a CT with "
            "AnatomyNet, then lets you correct the result in the Segment Editor and read per-organ volumes. "
            "Models trained on synthetic or small data are demonstrations and not for clinical use."
        )
        self.parent.acknowledgementText = _(
            "AnatomyNet: Zhu et al., deep learning for fast and fully automated whole-volume segmentation of "
            "head and neck anatomy, Medical Physics 2019. Built on 3D Slicer and PyTorch."
        )


#
# Parameter node
#
@parameterNodeWrapper
class AnatomyNetHaNParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode


#
# Logic: the Qt-free HeadNeckLogic plus Slicer's parameter-node singleton
#
class AnatomyNetHaNLogic(ScriptedLoadableModuleLogic, HeadNeckLogic):
    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        HeadNeckLogic.__init__(self)

    def getParameterNode(self):
        return AnatomyNetHaNParameterNode(super().getParameterNode())


#
# Widget
#
class AnatomyNetHaNWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._logLinesShown = 0
        self._editorNode = None
        self._observedSegmentation = None
        self._tableNode = None
        self._pollTimer = None
        self._tableTimer = None

    # -- set-up and lifecycle ------------------------------------------------------------------------
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AnatomyNetHaN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = AnatomyNetHaNLogic()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPollTimer)
        self._tableTimer = qt.QTimer()
        self._tableTimer.setSingleShot(True)
        self._tableTimer.setInterval(TABLE_DELAY_MS)
        self._tableTimer.connect("timeout()", self.updateVolumeTable)

        editor = self.ui.segmentEditorWidget
        editor.setMaximumNumberOfUndoStates(10)
        self.selectSegmentEditorNode()  # before setMRMLScene, so the scene's automatic choices are kept
        editor.setMRMLScene(slicer.mrmlScene)

        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.hide()
        settings = qt.QSettings()
        self.ui.datasetDirectoryButton.directory = settings.value(SETTINGS_DATASET_FOLDER, qt.QDir.homePath())
        self.populateModels()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.addModelFolderButton.connect("clicked(bool)", self.onAddModelFolderButton)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsvButton)
        self.ui.addToTrainingSetButton.connect("clicked(bool)", self.onAddToTrainingSetButton)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.datasetDirectoryButton.connect("directoryChanged(QString)", self.onDatasetDirectoryChanged)

        self.initializeParameterNode()
        self.onModelChanged()

    def cleanup(self):
        if self._run is not None and not self._run.finished:
            self._run.cancel()
        for timer in (self._pollTimer, self._tableTimer):
            if timer is not None:
                timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.selectSegmentEditorNode()
        editor = self.ui.segmentEditorWidget
        editor.installKeyboardShortcuts()
        editor.updateWidgetFromMRML()

    def exit(self):
        editor = self.ui.segmentEditorWidget
        editor.setActiveEffect(None)
        editor.uninstallKeyboardShortcuts()
        editor.removeViewObservations()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event):
        if self._run is not None and not self._run.finished:
            self._run.cancel()
        self.setParameterNode(None)
        self.observeSegmentation(None)
        self.ui.segmentEditorWidget.setSegmentationNode(None)
        self.ui.segmentEditorWidget.removeViewObservations()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.selectSegmentEditorNode()
            self.ui.segmentEditorWidget.updateWidgetFromMRML()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            # default to the most recently loaded image (not a label map)
            volumes = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                       if not n.IsA("vtkMRMLLabelMapVolumeNode")]
            if volumes:
                self._parameterNode.inputVolume = volumes[-1]

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

    def selectSegmentEditorNode(self):
        """This module's own editor parameter node, so its selection does not disturb the Segment Editor."""
        node = slicer.mrmlScene.GetSingletonNode(EDITOR_NODE_TAG, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(EDITOR_NODE_TAG)
            node.SetName(EDITOR_NODE_TAG)
            node.SetHideFromEditors(True)
            node = slicer.mrmlScene.AddNode(node)
        if node is not self._editorNode:
            if self._editorNode is not None:
                self.removeObserver(self._editorNode, vtk.vtkCommand.ModifiedEvent, self.onEditorNodeModified)
            self._editorNode = node
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onEditorNodeModified)
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(node)
        self.onEditorNodeModified()

    # -- models ----------------------------------------------------------------------------------------
    def extraModelFolders(self):
        text = qt.QSettings().value(SETTINGS_MODEL_FOLDERS, "") or ""
        return [folder for folder in str(text).split(os.pathsep) if folder and os.path.isdir(folder)]

    def populateModels(self):
        combo = self.ui.modelComboBox
        combo.clear()
        try:
            for label, folder in self.logic.models(self.extraModelFolders()):
                combo.addItem(label, folder)
        except HeadSegError as error:
            self.setStatus(str(error), error=True)
        if combo.count == 0:
            self.setStatus(_("No head-and-neck model is installed. Add a model folder or train one with headseg-train."),
                           error=True)
        self.updateButtons()

    def onAddModelFolderButton(self):
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Choose a model package folder"))
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

    def currentModel(self):
        index = self.ui.modelComboBox.currentIndex
        return self.ui.modelComboBox.itemData(index) if index >= 0 else None

    def onModelChanged(self, index=None):
        """The organ checklist follows the model's label set (PDDCA or OpenKBP organs)."""
        widget = self.ui.structuresListWidget
        widget.clear()
        if self.currentModel():
            try:
                organs = self.logic.organs(self.currentModel())
            except HeadSegError as error:
                organs = []
                self.setStatus(str(error), error=True)
            for key, name in organs:
                item = qt.QListWidgetItem(name)
                item.setData(qt.Qt.UserRole, key)
                item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
                item.setCheckState(qt.Qt.Checked)
                widget.addItem(item)
        self.updateButtons()

    def selectedOrgans(self):
        widget = self.ui.structuresListWidget
        return [widget.item(n).data(qt.Qt.UserRole) for n in range(widget.count)
                if widget.item(n).checkState() == qt.Qt.Checked]

    # -- segmenting ------------------------------------------------------------------------------------
    def isRunning(self):
        return self._run is not None and not self._run.finished

    def onApplyButton(self):
        if self.isRunning():
            self._run.cancel()
            self.setStatus(_("Cancelling..."))
            self.updateButtons()
            return
        if not self.ensurePythonPackages():
            return
        try:
            self._run = self.logic.start(
                self._parameterNode.inputVolume,
                model=self.currentModel(),
                device=self.ui.deviceComboBox.currentText,
                output_node=self._parameterNode.outputSegmentation,
                structures=self.selectedOrgans(),
                show_3d=not slicer.app.commandOptions().noMainWindow,
                work_root=slicer.app.temporaryPath,
            )
        except HeadSegError as error:
            self._run = None
            self.setStatus(str(error), error=True)
            return
        except Exception as error:  # a bug: tell the user, keep the traceback in the Python console
            logging.exception("AnatomyNetHaN could not start")
            self._run = None
            self.setStatus(_("Could not start the segmentation: {error}").format(error=error), error=True)
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
            logging.exception("AnatomyNetHaN: polling failed")
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
        editor = self.ui.segmentEditorWidget
        editor.setSegmentationNode(run.segmentation_node)
        if hasattr(editor, "setSourceVolumeNode"):
            editor.setSourceVolumeNode(run.input_node)
        else:  # Slicer < 5.2
            editor.setMasterVolumeNode(run.input_node)
        self._tableNode = run.table_node
        self.observeSegmentation(run.segmentation_node)
        slicer.util.setSliceViewerLayers(background=run.input_node, fit=False)

    def ensurePythonPackages(self):
        """Install what the segmentation process needs, only after the user agreed."""
        missing = self.logic.missing_packages()
        if not missing:
            return True
        question = _(
            "The segmentation needs Python packages that are not installed:\n\n{packages}\n\n"
            "Install them now? They are downloaded from the internet; this can take several minutes."
        ).format(packages="\n".join(missing))
        if not slicer.util.confirmOkCancelDisplay(question, _("Install Python packages")):
            self.setStatus(_("Not installed: {packages}. Segmentation needs them.").format(
                packages=", ".join(missing)), error=True)
            return False
        try:
            with slicer.util.WaitCursor():
                if any(requirement.startswith("torch") for requirement in missing):
                    self.installTorch()
                for requirement in missing:
                    if not requirement.startswith("torch"):
                        slicer.util.pip_install(requirement)
        except Exception as error:
            logging.exception("AnatomyNetHaN: installing packages failed")
            self.setStatus(_("Installing packages failed: {error}").format(error=error), error=True)
            return False
        still = self.logic.missing_packages()
        if still:
            self.setStatus(_("Still missing after installation: {packages}. Restart Slicer and try again.").format(
                packages=", ".join(still)), error=True)
            return False
        return True

    def installTorch(self):
        """PyTorch comes from the PyTorch extension, which picks the build matching the GPU driver."""
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError(
                _("Install the PyTorch extension (Extensions Manager), restart Slicer and try again.")
            ) from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        try:
            torch = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=">=2.1")
        except TypeError:  # older PyTorchUtils without version arguments
            torch = torchLogic.installTorch(askConfirmation=False)
        if torch is None:
            raise RuntimeError(_("PyTorch was not installed."))

    # -- review: editor, volume table ------------------------------------------------------------------
    def onEditorNodeModified(self, caller=None, event=None):
        segmentation = self._editorNode.GetSegmentationNode() if self._editorNode else None
        if segmentation is not self._observedSegmentation:
            self.observeSegmentation(segmentation)

    def observeSegmentation(self, segmentationNode):
        """Recompute the volume table (after a short pause) whenever the reviewed segmentation changes."""
        if self._observedSegmentation is not None:
            for event in (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved,
                          slicer.vtkSegmentation.SegmentModified):
                self.removeObserver(self._observedSegmentation, event, self.onSegmentationModified)
        self._observedSegmentation = segmentationNode
        if segmentationNode is not None:
            for event in (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved,
                          slicer.vtkSegmentation.SegmentModified):
                self.addObserver(segmentationNode, event, self.onSegmentationModified)
        self.updateReviewedList()
        self.updateVolumeTable()

    def onSegmentationModified(self, caller=None, event=None):
        self._tableTimer.start()  # restarts while the user keeps painting

    def updateVolumeTable(self):
        segmentation = self._observedSegmentation
        if segmentation is None or segmentation.GetScene() is None:
            self._tableNode = None
            self.ui.volumeTableView.setMRMLTableNode(None)
            self.ui.volumeSummaryLabel.text = ""
            self.updateButtons()
            return
        try:
            self._tableNode, summary = self.logic.refresh_volume_table(segmentation)
            self.ui.volumeSummaryLabel.text = summary
        except HeadSegError as error:
            self.setStatus(str(error), error=True)
        except Exception as error:  # runs from a timer: never let a traceback be the only trace
            logging.exception("Volume table update failed")
            self.setStatus(_("The volume table could not be updated: {error}").format(error=error), error=True)
        self.ui.volumeTableView.setMRMLTableNode(self._tableNode)
        self.ui.volumeTableView.resizeColumnsToContents()
        self.updateButtons()

    def updateReviewedList(self):
        widget = self.ui.reviewedListWidget
        widget.clear()
        for key, name in self.logic.reviewable_structures(self._observedSegmentation):
            item = qt.QListWidgetItem(name)
            item.setData(qt.Qt.UserRole, key)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Unchecked)  # the user ticks what was really checked
            widget.addItem(item)

    def onExportCsvButton(self):
        if self._tableNode is None:
            self.setStatus(_("There is no volume table yet: segment the image or select a segmentation."), error=True)
            return
        default = os.path.join(qt.QDir.homePath(), self._tableNode.GetName() + ".csv")
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export volumes"), default,
                                              _("CSV files (*.csv)"))
        if not path:
            return
        try:
            written = self.logic.export_csv(self._tableNode, path)
        except HeadSegError as error:
            self.setStatus(str(error), error=True)
            return
        except Exception as error:  # e.g. a missing Python package: a sentence, not a traceback
            logging.exception("Export CSV failed")
            self.setStatus(_("Export failed: {error}").format(error=error), error=True)
            return
        self.setStatus(_("Volumes saved to {path}").format(path=written))

    def onDatasetDirectoryChanged(self, directory):
        qt.QSettings().setValue(SETTINGS_DATASET_FOLDER, directory)

    def onAddToTrainingSetButton(self):
        widget = self.ui.reviewedListWidget
        reviewed = [widget.item(n).data(qt.Qt.UserRole) for n in range(widget.count)
                    if widget.item(n).checkState() == qt.Qt.Checked]
        volume = self._editorNode.GetSourceVolumeNode() if hasattr(self._editorNode, "GetSourceVolumeNode") \
            else self._editorNode.GetMasterVolumeNode()
        try:
            case = self.logic.add_to_training_set(volume or self._parameterNode.inputVolume,
                                                  self._observedSegmentation,
                                                  self.ui.datasetDirectoryButton.directory, reviewed)
        except HeadSegError as error:
            self.setStatus(str(error), error=True)
            return
        except Exception as error:  # e.g. a missing Python package: a sentence, not a traceback
            logging.exception("Add to training set failed")
            self.setStatus(_("Adding the case failed: {error}").format(error=error), error=True)
            return
        message = _("Added case {case} to {folder}.").format(case=case.case, folder=case.manifest.parent)
        self.setStatus(" ".join([message] + case.warnings))

    # -- view state ------------------------------------------------------------------------------------
    def setStatus(self, text, error=False):
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b;" if error else "")

    def updateButtons(self, caller=None, event=None):
        running = self.isRunning()
        cancelling = running and self._run.state == "cancelling"
        hasInput = self._parameterNode is not None and self._parameterNode.inputVolume is not None
        hasModel = self.ui.modelComboBox.count > 0
        self.ui.applyButton.text = _("Cancel") if running else _(SEGMENT_BUTTON_TEXT)
        self.ui.applyButton.enabled = (running and not cancelling) or (not running and hasInput and hasModel)
        if not running:
            self.ui.applyButton.toolTip = (_("Run the model in a separate process; press again to cancel.")
                                           if hasInput else _("Select an input CT first."))
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.progressBar.visible = running
        self.ui.exportCsvButton.enabled = self._tableNode is not None
        self.ui.addToTrainingSetButton.enabled = self._observedSegmentation is not None and not running


#
# Test (run by Slicer's CI: Slicer --testing --python-code "...runUnitTest(..., 'AnatomyNetHaN')")
#
class AnatomyNetHaNTest(ScriptedLoadableModuleTest):
    """Exercises the same logic as the pytest suites, inside the Slicer application."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_import_table_and_training_export()
        self.setUp()
        self.test_segment_phantom_end_to_end()

    def _phantom(self):
        from headseg.phantoms import make_head_phantom
        from headseg.slicer_glue import node_from_volume

        phantom = make_head_phantom(seed=2, spacing=(1.5, 1.5, 2.0), noise_hu=5.0)
        return phantom, node_from_volume(phantom.image, "Phantom CT")

    def test_import_table_and_training_export(self):
        import numpy as np

        from headseg.geometry import Volume
        from headseg.io import write_segmentation
        from headseg.labels import get_label_set
        from headseg.slicer_glue import import_segmentation_file, rows_from_table_node

        self.delayDisplay("Import organs, check the volume table, export a training case")
        phantom, ct = self._phantom()
        pddca = get_label_set("pddca")
        labels = np.zeros(phantom.image.shape, np.uint8)
        labels[5:15, 20:40, 30:50] = pddca.by_key("mandible").label
        labels[20:25, 45:55, 45:55] = pddca.by_key("brainstem").label
        labelmap = Volume(labels, phantom.image.spacing, phantom.image.origin, phantom.image.direction)
        logic = AnatomyNetHaNLogic()
        with tempfile.TemporaryDirectory() as folder:
            path = write_segmentation(labelmap, pddca, os.path.join(folder, "organs.seg.nrrd"))
            segmentation = import_segmentation_file(path, pddca, ct, name="organs")
            table = logic.volume_table(segmentation)
            voxels = {r.structure: r.voxels for r in rows_from_table_node(table)}
            self.assertEqual(voxels["mandible"], 10 * 20 * 20)
            self.assertEqual(voxels["brainstem"], 5 * 10 * 10)
            case = logic.add_to_training_set(ct, segmentation, os.path.join(folder, "dataset"), ["mandible"])
            self.assertTrue(case.segmentation.is_file())
        self.delayDisplay("Test passed")

    def test_segment_phantom_end_to_end(self):
        logic = AnatomyNetHaNLogic()
        if not logic.models() or logic.missing_packages():
            self.delayDisplay("No head-and-neck model or missing packages: end-to-end step skipped")
            return
        self.delayDisplay("Segment a synthetic CT in a child process, keeping two organs")
        _phantom, ct = self._phantom()
        keep = [key for key, _name in logic.organs()][:2]
        run = logic.start(ct, device="cpu", structures=keep)
        state = run.wait(timeout=900)
        self.assertEqual(state, "succeeded", run.message)
        self.assertEqual(sorted(run.segmentation_node.GetSegmentation().GetSegmentIDs()), sorted(keep))
        self.delayDisplay("Test passed")
