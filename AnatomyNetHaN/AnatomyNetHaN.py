"""AnatomyNetHaN: one click to segment head-and-neck organs at risk in a CT (AnatomyNet).

The panel is a thin view over :class:`AnatomyNetHaNLib.HeadNeckLogic` (Qt-free, shared code in
``headseg.slicer``); what it does alike with OrbitSegmentation is ``headseg.slicer.panel``. The
model runs in a separate process (``headseg segment``), polled by a timer, so Slicer stays responsive
and the run can be cancelled at any time.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

if importlib.util.find_spec("headseg") is None:  # a source checkout: headseg is one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from AnatomyNetHaNLib.logic import HeadNeckLogic  # noqa: E402

from headseg.errors import HeadSegError  # noqa: E402
from headseg.slicer.panel import (  # noqa: E402
    SegmentationPanelMixin,
    describe_module,
    startup_completed,
)
from headseg.slicer.self_test import ModuleSelfTestMixin  # noqa: E402


#
# Module
#
class AnatomyNetHaN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        describe_module(
            self.parent,
            title=_("AnatomyNet Head and Neck"),
            help_text=_(
                "Segments head-and-neck organs at risk (brain stem, optic chiasm and nerves, mandible, parotid "
                "and submandibular glands, or the OpenKBP organs, depending on the model) in a CT with "
                "AnatomyNet, then lets you correct the result in the Segment Editor and read per-organ volumes. "
                "Models trained on synthetic or small data are demonstrations and not for clinical use. "
                "To try the module, load 'HeadSeg head and neck CT (OpenKBP pt_286)' from the Sample Data module."
            ),
            acknowledgement=_(
                "AnatomyNet: Zhu et al., deep learning for fast and fully automated whole-volume segmentation of "
                "head and neck anatomy, Medical Physics 2019. Built on 3D Slicer and PyTorch. The sample CT is "
                "from the OpenKBP challenge data (Babier et al., Medical Physics 48:5549, 2021), which derives "
                "from The Cancer Imaging Archive (Clark et al., J Digit Imaging 26:1045, 2013); CC BY."
            ),
        )
        # once Slicer has started: HeadSeg's terminology and this module's entry in the Sample Data module
        slicer.app.connect("startupCompleted()",
                           lambda: startup_completed("han", self.resourcePath("SampleData")))


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
    def getParameterNode(self):
        return AnatomyNetHaNParameterNode(super().getParameterNode())


#
# Widget: the shared panel (headseg.slicer.panel) plus the organ checklist
#
class AnatomyNetHaNWidget(SegmentationPanelMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    logicClass = AnatomyNetHaNLogic
    segmentButtonText = _("Segment organs")
    noModelMessage = _("No head-and-neck model is installed. Add a model folder or train one with headseg-train.")
    datasetFolderSetting = "HeadSeg/HeadNeckDatasetFolder"

    def onModelChanged(self, index=None):
        """The organ checklist follows the model's label set (PDDCA or OpenKBP organs), all ticked."""
        organs = []
        if self.currentModel():
            try:
                organs = self.logic.organs(self.currentModel())
            except HeadSegError as error:
                self.setStatus(str(error), error=True)
        self.fillChecklist(self.ui.structuresListWidget, organs, checked=True)
        self.updateButtons()

    def startOptions(self):
        """Only the ticked organs are kept in the result."""
        return {"structures": self.checkedItemData(self.ui.structuresListWidget)}


#
# Test (run by Slicer's CI: Slicer --testing --python-code "...runUnitTest(..., 'AnatomyNetHaN')")
#
class AnatomyNetHaNTest(ModuleSelfTestMixin, ScriptedLoadableModuleTest):
    """Exercises the same logic as the pytest suites, inside the Slicer application."""

    sampleTask = "han"

    phantomSeed = 2

    def test_import_table_and_training_export(self):
        import numpy as np

        from headseg.geometry import Volume
        from headseg.io import write_segmentation
        from headseg.labels import get_label_set
        from headseg.slicer.segments import import_segmentation_file
        from headseg.slicer.tables import rows_from_table_node

        if not self.canWriteCases(AnatomyNetHaNLogic()):  # a clean Slicer has no pynrrd to write the files
            return
        self.delayDisplay("Import organs, check the volume table, export a training case")
        phantom, ct = self.phantomCT()
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
        if not self.canSegment(logic):
            return
        self.delayDisplay("Segment a synthetic CT in a child process, keeping two organs")
        _phantom, ct = self.phantomCT()
        keep = [key for key, _name in logic.organs()][:2]
        run = logic.start(ct, device="cpu", structures=keep)
        state = run.wait(timeout=900)
        self.assertEqual(state, "succeeded", run.message)
        self.assertEqual(sorted(run.segmentation_node.GetSegmentation().GetSegmentIDs()), sorted(keep))
        self.delayDisplay("Test passed")
