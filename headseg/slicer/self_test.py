"""What the two modules' self-tests share (their ``ScriptedLoadableModuleTest`` classes, run inside the
Slicer application by Slicer's CI and the Reload & Test button).

``slicer`` is imported inside the methods, so this module imports in plain Python.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

__all__ = ["ModuleSelfTestMixin"]


class ModuleSelfTestMixin:
    """What the modules' ``ScriptedLoadableModuleTest`` classes share (put it first among their bases):
    each ``test_*`` method runs on a cleared scene, with a synthetic head CT at hand, and the end-to-end
    step is skipped, saying why, where no model or Python package is installed."""

    #: ScriptedLoadableModuleTest's (declared for type checkers only)
    delayDisplay: Callable[..., None]

    #: seed of the synthetic head phantom (make_head_phantom)
    phantomSeed = 1
    #: the task whose Sample Data entry the module registers ("orbit" or "han")
    sampleTask = None

    def setUp(self):
        import slicer

        slicer.mrmlScene.Clear()

    def runTest(self):
        """Slicer's CI and the Reload & Test button call this: every test_* method, in name order."""
        for name in sorted(n for n in dir(self) if n.startswith("test_")):
            self.setUp()
            getattr(self, name)()

    def phantomCT(self):
        """(phantom, its CT as a volume node): a synthetic head on a 1.5 x 1.5 x 2 mm grid."""
        from headseg.slicer.scene import node_from_volume
        from headseg.synth.phantoms import make_head_phantom

        phantom = make_head_phantom(seed=self.phantomSeed, spacing=(1.5, 1.5, 2.0), noise_hu=5.0)
        return phantom, node_from_volume(phantom.image, "Phantom CT")

    def canWriteCases(self, logic) -> bool:
        """True when the packages of the panel's own actions are installed (a clean Slicer lacks pynrrd,
        which writes the training case); otherwise says so and the step is skipped."""
        from headseg.slicer.runs import PANEL_REQUIREMENTS

        missing = logic.missing_packages(PANEL_REQUIREMENTS)
        if missing:
            self.delayDisplay(f"Missing Python packages {', '.join(missing)}: step skipped")
        return not missing

    def canSegment(self, logic) -> bool:
        """True when ``logic`` has a model and every Python package it needs; otherwise says so."""
        if logic.models() and not logic.missing_packages():
            return True
        self.delayDisplay(f"No {logic.task} model or missing packages: end-to-end step skipped")
        return False

    def test_sample_data(self):
        """The module's Sample Data entry loads a CT the module accepts, and Slicer loads HeadSeg's terminology."""
        import slicer

        from headseg.labels import HEADSEG_TERMINOLOGY_CONTEXT
        from headseg.slicer.sample_data import load_sample
        from headseg.slicer.scene import volume_from_node
        from headseg.slicer.terminology import load_terminology
        from headseg.validation import check_ct

        self.delayDisplay("Load the module's sample")
        module_dir = os.path.dirname(os.path.abspath(sys.modules[type(self).__module__].__file__))
        data_dir = os.path.join(module_dir, "Resources", "SampleData")
        node = load_sample(self.sampleTask, data_dir, os.path.join(slicer.app.temporaryPath, "HeadSeg"))
        self.assertEqual(check_ct(volume_from_node(node)), [])
        self.assertEqual(load_terminology(), HEADSEG_TERMINOLOGY_CONTEXT)  # the real Slicer reads the file
        self.delayDisplay("Test passed")
