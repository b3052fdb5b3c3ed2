"""The widget behaviour both Slicer modules share: one panel, written once.

:class:`SegmentationPanelMixin` is what OrbitSegmentation's and AnatomyNetHaN's widgets do alike --
start, poll and cancel a run, show its result in the Segment Editor, ask before installing Python
packages, keep the volume table in step with edits, export CSV, add a case to the training set, report
status and keep the buttons right, remember model and dataset folders. Each module's widget keeps only
what differs: its .ui (``Resources/UI/<Module>.ui``), logic class, texts and extra inputs (the ROI of the
orbit, the organ checklist of the head and neck), through the class attributes and hooks below.

``qt``, ``slicer`` and ``vtk`` are imported inside the methods, so this module imports (and its pure
helpers are tested) in plain Python, like the rest of ``headseg``.

Use it as the FIRST base, so its ``setup``/``cleanup``/``enter``/``exit`` replace the Slicer ones::

    class OrbitSegmentationWidget(SegmentationPanelMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
        logicClass = OrbitSegmentationLogic
        ...
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Dict, Iterable, List, Optional

from headseg.errors import HeadSegError
from headseg.slicer.runs import PANEL_REQUIREMENTS
from headseg.slicer.tables import VolumeFollower

__all__ = ["SegmentationPanelMixin", "describe_module", "startup_completed",
           "model_folders_from_setting", "forget_modules", "SETTINGS_MODEL_FOLDERS", "MODULE_DEPENDENCIES"]

#: Slicer modules both HeadSeg modules use: the Segment Editor widget and segmentation logic, the
#: terminology selector that lists HeadSeg's structures, the Sample Data entries (Modules/Loadable and
#: Modules/Scripted of Slicer 5.6 to 5.10; Testing/slicer/slicer_api.json)
MODULE_DEPENDENCIES = ("Segmentations", "SegmentEditor", "Terminologies", "SampleData")
#: QSettings key of the model folders the user added (both modules; each lists only its task's models).
SETTINGS_MODEL_FOLDERS = "HeadSeg/ExtraModelFolders"
POLL_INTERVAL_MS = 200  # how often a running segmentation is polled
TABLE_DELAY_MS = 500  # the volume table is recomputed this long after the last edit


def _(text: str) -> str:
    """Slicer's ``tr``: the shared panel's texts are translated once, in this file's context
    (``headseg.slicer.panel``); looked up at call time so that this module imports without Slicer."""
    try:
        from slicer.i18n import tr
    except ImportError:
        return text
    return tr(text)


def model_folders_from_setting(text: Optional[str], separator: str = os.pathsep) -> List[str]:
    """The saved model folders that still exist (a folder deleted since is dropped silently)."""
    return [folder for folder in str(text or "").split(separator) if folder and os.path.isdir(folder)]


def forget_modules(prefixes: Iterable[str]) -> List[str]:
    """Drop every loaded module under ``prefixes`` (packages and their submodules) from ``sys.modules``,
    so that the next import reads the files again; returns their names.

    Slicer's Reload (ScriptedLoadableModuleWidget.onReload) re-executes only ``<Module>.py``: without this
    its imports would return the ``headseg`` and ``<Module>Lib`` already loaded, and an edit there would
    need a restart."""
    prefixes = tuple(prefixes)
    names = [name for name in list(sys.modules)
             if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)]
    for name in names:
        del sys.modules[name]
    return names


class SegmentationPanelMixin:
    """Shared behaviour of the HeadSeg module widgets (see the module docstring).

    A widget sets the class attributes that are None here and may override the hooks
    :meth:`startOptions` and :meth:`onModelChanged`.
    """

    #: the module's logic class (ScriptedLoadableModuleLogic + its Lib's TaskLogic subclass)
    logicClass = None
    #: text of the Segment button while nothing runs (these texts are translated by the module: _("..."))
    segmentButtonText = None
    #: status line shown when no model of the task is installed
    noModelMessage = None
    #: QSettings key remembering the training dataset folder
    datasetFolderSetting = None
    #: set by ScriptedLoadableModuleWidget.__init__ (declared for type checkers only)
    moduleName: str

    def __init__(self, parent=None):
        from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
        from slicer.util import VTKObservationMixin

        # State first: without a parent, ScriptedLoadableModuleWidget.__init__ calls setup() at once.
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
        self._follower = None
        self._effectFactory = None
        self._refreshingTable = False  # the volume table is being refilled: its selection signals are not clicks
        self._changeResult = None  # the last "Compare with earlier scan" result (change table + numbers)
        VTKObservationMixin.__init__(self)
        ScriptedLoadableModuleWidget.__init__(self, parent)

    @property
    def editorNodeTag(self) -> str:
        """Singleton tag of the module's own Segment Editor parameter node."""
        return f"{self.moduleName}SegmentEditor"

    # -- hooks -----------------------------------------------------------------------------------------
    def startOptions(self) -> Dict[str, Any]:
        """Extra keyword arguments of ``logic.start`` from the module's own inputs (ROI, organs...)."""
        return {}

    def onModelChanged(self, index=None):
        """The chosen model changed (modules with a model-dependent checklist rebuild it here)."""
        self.updateButtons()

    # -- set-up and lifecycle ------------------------------------------------------------------------
    def setup(self):
        import qt
        import slicer
        from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logicClass()
        self.loadTerminology()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPollTimer)
        self._tableTimer = qt.QTimer()
        self._tableTimer.setSingleShot(True)
        self._tableTimer.setInterval(TABLE_DELAY_MS)
        self._tableTimer.connect("timeout()", self.updateVolumeTable)
        # every stroke (SourceRepresentationModified) restarts the timer: the table follows ~0.5 s after the last
        self._follower = VolumeFollower(schedule=self._tableTimer.start)

        editor = self.ui.segmentEditorWidget
        editor.setMaximumNumberOfUndoStates(10)
        self.selectSegmentEditorNode()  # before setMRMLScene, so the scene's automatic choices are kept
        editor.setMRMLScene(slicer.mrmlScene)
        # effects that extensions register after this widget exists must still appear (SegmentEditor.py does this)
        self._effectFactory = slicer.qSlicerSegmentEditorEffectFactory.instance()
        self._effectFactory.connect("effectRegistered(QString)", self.onEffectRegistered)

        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.hide()
        settings = qt.QSettings()
        self.ui.datasetDirectoryButton.directory = settings.value(self.datasetFolderSetting, qt.QDir.homePath())
        self.populateModels()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.addModelFolderButton.connect("clicked(bool)", self.onAddModelFolderButton)
        self.ui.createTableButton.connect("clicked(bool)", self.onCreateTableButton)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsvButton)
        self.ui.addToTrainingSetButton.connect("clicked(bool)", self.onAddToTrainingSetButton)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.datasetDirectoryButton.connect("directoryChanged(QString)", self.onDatasetDirectoryChanged)
        # review aids: qMRMLTableView's own selectionChanged() signal (qMRMLTableView.h, v5.6.2 and main)
        self.ui.volumeTableView.connect("selectionChanged()", self.onVolumeRowSelected)
        self.ui.showUncertaintyCheckBox.connect("toggled(bool)", self.onShowUncertaintyToggled)
        self.ui.uncertaintyOpacitySlider.connect("valueChanged(double)", self.onUncertaintyOpacityChanged)
        # compare with an earlier scan
        self.ui.baselineSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.ui.followupSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.exportChangeCsvButton.connect("clicked(bool)", self.onExportChangeCsvButton)

        self.initializeParameterNode()
        self.onModelChanged()

    def cleanup(self):
        if self.isRunning():
            self._run.cancel()
        for timer in (self._pollTimer, self._tableTimer):
            if timer is not None:
                timer.stop()
        if self._follower is not None:
            self._follower.stop()
        if self._effectFactory is not None:
            self._effectFactory.disconnect("effectRegistered(QString)", self.onEffectRegistered)
        self.removeObservers()

    def enter(self):
        import slicer

        editor = self.ui.segmentEditorWidget
        # Slicer < 5.10 cannot edit in light box slice views; 5.10 deprecated the call (no longer needed)
        if (slicer.app.majorVersion, slicer.app.minorVersion) < (5, 10) and editor.turnOffLightboxes():
            slicer.util.warningDisplay(
                _("The Segment Editor cannot edit slice views in light box mode; the views were reset."),
                windowTitle=_("Segment Editor"))
        self.initializeParameterNode()
        editor.installKeyboardShortcuts()
        self.selectSegmentEditorNode()
        editor.updateWidgetFromMRML()

    def exit(self):
        import vtk

        editor = self.ui.segmentEditorWidget
        editor.setActiveEffect(None)
        editor.uninstallKeyboardShortcuts()
        editor.removeViewObservations()
        # edits made elsewhere (Slicer's own Segment Editor) must not recompute this panel's table;
        # enter() re-selects the editor node, which follows the segmentation again (one full measure)
        self.stopFollowing()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def stopFollowing(self):
        """No more table updates until the panel follows a segmentation again."""
        self._tableTimer.stop()
        self._follower.stop()
        self._observedSegmentation = None

    def onReload(self):
        """Reload re-reads the module's own packages too (see :func:`forget_modules`)."""
        from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget

        forget_modules(("headseg", f"{self.moduleName}Lib"))
        ScriptedLoadableModuleWidget.onReload(self)

    def onEffectRegistered(self, effectName=None):
        self.ui.segmentEditorWidget.updateEffectList()

    def onSceneStartClose(self, caller, event):
        if self.isRunning():
            self._run.cancel()
        self.setParameterNode(None)
        self.observeSegmentation(None)
        self.showChanges(None)
        self.ui.segmentEditorWidget.setSegmentationNode(None)
        self.ui.segmentEditorWidget.removeViewObservations()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.selectSegmentEditorNode()
            self.ui.segmentEditorWidget.updateWidgetFromMRML()

    def onSceneEndImport(self, caller, event):
        """A scene was loaded (or imported): it may hold this module's editor node and new segmentations."""
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.selectSegmentEditorNode()
            self.ui.segmentEditorWidget.updateWidgetFromMRML()

    def initializeParameterNode(self):
        import slicer

        self.setParameterNode(self.logic.getParameterNode())
        self.updateInputSelector()
        current = self._parameterNode.inputVolume
        if current is None or not self.logic.is_input_candidate(current):
            # the most recently loaded image: not a label map, not an uncertainty map
            self._parameterNode.inputVolume = self.logic.default_input_volume(slicer.mrmlScene)

    def updateInputSelector(self):
        """The uncertainty maps are not offered as the input CT (qMRMLSortFilterProxyModel's
        hiddenNodeIDs, in Slicer 5.6 to 5.10)."""
        import slicer

        proxy = self.ui.inputVolumeSelector.sortFilterProxyModel()
        proxy.hiddenNodeIDs = self.logic.hidden_input_ids(slicer.mrmlScene)

    def setParameterNode(self, inputParameterNode):
        import vtk

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
        import slicer
        import vtk

        tag = self.editorNodeTag
        node = slicer.mrmlScene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(tag)
            node.SetName(tag)
            node.SetHideFromEditors(True)
            node = slicer.mrmlScene.AddNode(node)
        if node is not self._editorNode:
            if self._editorNode is not None:
                self.removeObserver(self._editorNode, vtk.vtkCommand.ModifiedEvent, self.onEditorNodeModified)
            self._editorNode = node
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onEditorNodeModified)
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(node)
        self.onEditorNodeModified()

    def loadTerminology(self):
        """HeadSeg's terminology, for a module loaded after Slicer's start-up (loading twice does nothing)."""
        from headseg.slicer.terminology import load_terminology

        try:
            load_terminology()
        except Exception:
            logging.exception("%s: loading the HeadSeg terminology failed", self.moduleName)

    def runAction(self, failureText: str, action, *args, **kwargs):
        """Run ``action`` for the user; returns (True, its result) or (False, None) after reporting the failure.

        A HeadSegError is a problem the user can fix: its message becomes the status line as it is. Any
        other exception (a bug, a missing package) becomes ``failureText`` (translated, with ``{error}``),
        and its traceback goes to the Python console -- never a traceback alone.
        """
        try:
            return True, action(*args, **kwargs)
        except HeadSegError as error:
            self.setStatus(str(error), error=True)
        except Exception as error:
            message = failureText.format(error=error)
            logging.exception("%s: %s", self.moduleName, message)
            self.setStatus(message, error=True)
        return False, None

    # -- models ----------------------------------------------------------------------------------------
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

    # -- segmenting ------------------------------------------------------------------------------------
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

    def ensurePythonPackages(self, requirements=None) -> bool:
        """Install what an action needs (default: the segmentation process), only after the user agreed.

        Every panel action that runs HeadSeg code needing a package Slicer lacks calls this first:
        Slicer 5.6 to 5.10 ship numpy, scipy and SimpleITK but not pynrrd (PANEL_REQUIREMENTS)."""
        import slicer

        missing = self.logic.missing_packages(requirements)
        if not missing:
            return True
        question = _(
            "This needs Python packages that are not installed:\n\n{packages}\n\n"
            "Install them now? They are downloaded from the internet; this can take several minutes."
        ).format(packages="\n".join(missing))
        if not slicer.util.confirmOkCancelDisplay(question, _("Install Python packages")):
            self.setStatus(_("Not installed: {packages}. This action needs them.").format(
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
            logging.exception("%s: installing packages failed", self.moduleName)
            self.setStatus(_("Installing packages failed: {error}").format(error=error), error=True)
            return False
        still = self.logic.missing_packages(requirements)
        if still:
            self.setStatus(_("Still missing after installation: {packages}. Restart Slicer and try again.")
                           .format(packages=", ".join(still)), error=True)
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

    def observeSegmentation(self, segmentationNode, measures=None):
        """Follow the reviewed segmentation: the volumes are recomputed ~0.5 s after each edit, for the
        edited segments only. ``measures`` just taken of it (a run's result) are not taken again."""
        self._tableTimer.stop()
        self._observedSegmentation = segmentationNode
        self._follower.observe(segmentationNode, measures)
        self.updateReviewedList()
        self.updateVolumeTable()
        self.updateUncertaintyLayer()

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

    # -- review aids: the uncertainty map, where to look first ----------------------------------------
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

    # -- compare with an earlier scan ----------------------------------------------------------------------
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

    def updateReviewedList(self):
        # the user ticks what was really checked
        self.fillChecklist(self.ui.reviewedListWidget,
                           self.logic.reviewable_structures(self._observedSegmentation), checked=False)

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

    # -- checklists (reviewed structures; a module's own, e.g. the organs) --------------------------------
    @staticmethod
    def fillChecklist(listWidget, entries: Iterable[Any], checked: bool) -> None:
        """Replace a QListWidget's items by checkable (key, name) entries, all ticked or all unticked."""
        import qt

        listWidget.clear()
        for key, name in entries:
            item = qt.QListWidgetItem(name)
            item.setData(qt.Qt.UserRole, key)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked if checked else qt.Qt.Unchecked)
            listWidget.addItem(item)

    @staticmethod
    def checkedItemData(listWidget) -> List[Any]:
        """The keys (UserRole data) of the ticked items of a checklist."""
        import qt

        return [listWidget.item(n).data(qt.Qt.UserRole) for n in range(listWidget.count)
                if listWidget.item(n).checkState() == qt.Qt.Checked]

    # -- view state ------------------------------------------------------------------------------------
    def setStatus(self, text, error=False):
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b;" if error else "")

    def updateButtons(self, caller=None, event=None):
        running = self.isRunning()
        cancelling = running and self._run.state == "cancelling"
        hasInput = self._parameterNode is not None and self._parameterNode.inputVolume is not None
        hasModel = self.ui.modelComboBox.count > 0
        self.ui.applyButton.text = _("Cancel") if running else self.segmentButtonText
        self.ui.applyButton.enabled = (running and not cancelling) or (not running and hasInput and hasModel)
        if not running:
            self.ui.applyButton.toolTip = (_("Run the model in a separate process; press again to cancel.")
                                           if hasInput else _("Select an input CT first."))
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.progressBar.visible = running
        self.ui.exportCsvButton.enabled = self._observedSegmentation is not None
        self.ui.createTableButton.enabled = self._observedSegmentation is not None and self._tableNode is None
        self.ui.addToTrainingSetButton.enabled = self._observedSegmentation is not None and not running
        self.ui.compareButton.enabled = (self.ui.baselineSegmentationSelector.currentNode() is not None
                                         and self.ui.followupSegmentationSelector.currentNode() is not None)
        self.ui.exportChangeCsvButton.enabled = self._changeResult is not None


def describe_module(parent, title: str, help_text: str, acknowledgement: str) -> None:
    """Fill a module's entry in the Modules menu and its Help section; the category and contributors
    are the extension's, the same for every HeadSeg module."""
    from slicer.i18n import translate

    parent.title = title
    parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
    parent.dependencies = list(MODULE_DEPENDENCIES)
    parent.contributors = ["HeadSeg contributors"]
    parent.helpText = help_text
    parent.acknowledgementText = acknowledgement


def startup_completed(task: str, sample_data_dir: str) -> None:
    """What each module does once Slicer has started (connected to ``slicer.app``'s ``startupCompleted()``,
    when the Terminologies and Sample Data modules exist): load HeadSeg's terminology (as TotalSegmentator
    loads its own) and register the module's sample with the Sample Data module (as Slicer's module
    template does). A failure is logged, never raised: it must not disturb Slicer's start-up."""
    from headseg.slicer.sample_data import register_sample
    from headseg.slicer.terminology import load_terminology

    try:
        load_terminology()
    except Exception:
        logging.exception("HeadSeg: loading the HeadSeg terminology failed")
    try:
        register_sample(task, sample_data_dir, thumbnail=os.path.join(sample_data_dir, SAMPLE_THUMBNAILS[task]))
    except Exception:
        logging.exception("HeadSeg: registering the %s sample with the Sample Data module failed", task)


#: Thumbnail of each module's sample, in its Resources/SampleData (made by tools/make_slicer_images.py).
SAMPLE_THUMBNAILS = {"orbit": "OrbitSegmentationSample.png", "han": "AnatomyNetHaNSample.png"}
