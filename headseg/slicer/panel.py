"""The widget behaviour both Slicer modules share: one panel, written once.

:class:`SegmentationPanelMixin` is what OrbitSegmentation's and AnatomyNetHaN's widgets do alike. It is
composed of one mixin per job, each in its own module, and keeps the widget's life cycle itself (set-up,
entering and leaving the module, the scene closing or being imported, the parameter node, the module's
own Segment Editor node) and the buttons' state:

* ``panel_run.py``: start, poll and cancel a run, show its result in the Segment Editor;
* ``panel_review.py``: keep the volume table in step with edits, the review aids, export CSV;
* ``panel_compare.py``: compare with an earlier scan, export the changes;
* ``panel_training.py``: add a case to the training set, remember the dataset folder;
* ``panel_models.py``: the model choice, remember the model folders the user added;
* ``panel_base.py``: what they all use: report status, run an action for the user, ask before installing
  Python packages, checklists.

Each module's widget keeps only what differs: its .ui (``Resources/UI/<Module>.ui``), logic class, texts
and extra inputs (the ROI of the orbit, the organ checklist of the head and neck), through the class
attributes and hooks below. The modules' self-tests share ``self_test.py``.

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
from typing import Any, Dict, Iterable, List

from headseg.slicer.panel_base import _
from headseg.slicer.panel_compare import CompareMixin
from headseg.slicer.panel_models import ModelChoiceMixin
from headseg.slicer.panel_review import ReviewMixin
from headseg.slicer.panel_run import RunMixin
from headseg.slicer.panel_training import TrainingSetMixin
from headseg.slicer.tables import VolumeFollower

__all__ = ["SegmentationPanelMixin", "describe_module", "startup_completed", "forget_modules", "MODULE_DEPENDENCIES",
           "SAMPLE_THUMBNAILS"]

#: Slicer modules both HeadSeg modules use: the Segment Editor widget and segmentation logic, the
#: terminology selector that lists HeadSeg's structures, the Sample Data entries (Modules/Loadable and
#: Modules/Scripted of Slicer 5.6 to 5.10; Testing/slicer/slicer_api.json)
MODULE_DEPENDENCIES = ("Segmentations", "SegmentEditor", "Terminologies", "SampleData")
POLL_INTERVAL_MS = 200  # how often a running segmentation is polled
TABLE_DELAY_MS = 500  # the volume table is recomputed this long after the last edit


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


class SegmentationPanelMixin(RunMixin, ReviewMixin, CompareMixin, TrainingSetMixin, ModelChoiceMixin):
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

    # -- hooks -------------------------------------------------------------------------------------
    def startOptions(self) -> Dict[str, Any]:
        """Extra keyword arguments of ``logic.start`` from the module's own inputs (ROI, organs...)."""
        return {}

    def onModelChanged(self, index=None):
        """The chosen model changed (modules with a model-dependent checklist rebuild it here)."""
        self.updateButtons()

    # -- set-up and lifecycle ----------------------------------------------------------------------
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

    # -- view state --------------------------------------------------------------------------------
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
