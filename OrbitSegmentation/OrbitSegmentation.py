"""OrbitSegmentation: one click to segment the rectus muscles and optic nerve of both orbits in a head CT.

The panel is a thin view over :class:`OrbitSegmentationLib.OrbitLogic` (Qt-free, shared code in
``headseg.slicer``); what it does alike with AnatomyNetHaN is ``headseg.slicer.panel``. The model
runs in a separate process (``headseg segment``), polled by a timer, so Slicer stays responsive and the
run can be cancelled at any time.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile

import slicer
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
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

from OrbitSegmentationLib.logic import OrbitLogic  # noqa: E402

from headseg.slicer.panel import (  # noqa: E402
    SegmentationPanelMixin,
    describe_module,
    startup_completed,
)
from headseg.slicer.self_test import ModuleSelfTestMixin  # noqa: E402


#
# Module
#
class OrbitSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        describe_module(
            self.parent,
            title=_("Orbit Segmentation"),
            help_text=_(
                "Segments the superior, lateral, medial and inferior rectus muscles and the optic nerve of both "
                "orbits in a head CT (SV-net), then lets you correct the result in the Segment Editor and read "
                "per-structure volumes, including the total extraocular muscle volume of each side. "
                "Models trained on synthetic phantoms are demonstrations and not for clinical use. "
                "To try the module, load 'HeadSeg orbit phantom (synthetic)' from the Sample Data module."
            ),
            acknowledgement=_(
                "SV-net: Zhu et al., automated segmentation of the extraocular muscles and optic nerve in CT. "
                "Built on 3D Slicer and PyTorch."
            ),
        )
        # once Slicer has started: HeadSeg's terminology and this module's entry in the Sample Data module
        slicer.app.connect("startupCompleted()",
                           lambda: startup_completed("orbit", self.resourcePath("SampleData")))


#
# Parameter node
#
@parameterNodeWrapper
class OrbitSegmentationParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    roi: vtkMRMLMarkupsROINode
    outputSegmentation: vtkMRMLSegmentationNode


#
# Logic: the Qt-free OrbitLogic plus Slicer's parameter-node singleton
#
class OrbitSegmentationLogic(ScriptedLoadableModuleLogic, OrbitLogic):
    def getParameterNode(self):
        return OrbitSegmentationParameterNode(super().getParameterNode())


#
# Widget: the shared panel (headseg.slicer.panel) plus the optional ROI
#
class OrbitSegmentationWidget(SegmentationPanelMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    logicClass = OrbitSegmentationLogic
    segmentButtonText = _("Segment orbit")
    noModelMessage = _("No orbit model is installed. Add a model folder or train one with headseg-train.")
    datasetFolderSetting = "HeadSeg/OrbitDatasetFolder"

    def startOptions(self):
        """Both orbits are found automatically; a ROI, when chosen, limits the search to it."""
        return {"roi_node": self._parameterNode.roi}


#
# Test (run by Slicer's CI: Slicer --testing --python-code "...runUnitTest(..., 'OrbitSegmentation')")
#
class OrbitSegmentationTest(ModuleSelfTestMixin, ScriptedLoadableModuleTest):
    """Exercises the same logic as the pytest suites, inside the Slicer application."""

    sampleTask = "orbit"

    def test_import_table_and_training_export(self):
        import numpy as np

        from headseg.io import write_segmentation
        from headseg.labels import get_label_set
        from headseg.slicer.segments import import_segmentation_file
        from headseg.slicer.tables import rows_from_table_node

        if not self.canWriteCases(OrbitSegmentationLogic()):  # a clean Slicer has no pynrrd to write the files
            return
        self.delayDisplay("Import a segmentation, check the volume table, export a training case")
        phantom, ct = self.phantomCT()
        orbit = get_label_set("orbit")
        logic = OrbitSegmentationLogic()
        with tempfile.TemporaryDirectory() as folder:
            path = write_segmentation(phantom.labels, orbit, os.path.join(folder, "truth.seg.nrrd"))
            segmentation = import_segmentation_file(path, orbit, ct, name="truth")
            table = logic.volume_table(segmentation)
            rows = rows_from_table_node(table)
            counts = np.bincount(phantom.labels.array.ravel(), minlength=11)
            for structure in orbit:
                row = next(r for r in rows if (r.structure, r.side) == (structure.base_key, structure.side))
                self.assertEqual(row.voxels, counts[structure.label])
            self.assertIn("left/right", logic.summary(rows))
            case = logic.add_to_training_set(ct, segmentation, os.path.join(folder, "dataset"),
                                             ["optic_nerve_right"])
            self.assertTrue(case.segmentation.is_file())
            self.assertTrue(case.manifest.is_file())
        self.delayDisplay("Test passed")

    def test_segment_phantom_end_to_end(self):
        logic = OrbitSegmentationLogic()
        if not self.canSegment(logic):
            return
        self.delayDisplay("Segment a synthetic phantom in a child process")
        _phantom, ct = self.phantomCT()
        run = logic.start(ct, device="cpu")
        state = run.wait(timeout=900)
        self.assertEqual(state, "succeeded", run.message)
        self.assertEqual(run.segmentation_node.GetSegmentation().GetNumberOfSegments(), 10)
        self.assertIsNotNone(run.table_node)
        self.delayDisplay("Test passed")
