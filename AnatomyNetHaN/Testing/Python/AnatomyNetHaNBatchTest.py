"""The batch script's core (what ``Resources/Scripts/AnatomyNetHaNBatch.py`` runs) inside the Slicer application."""

from __future__ import annotations

import csv
import os
import tempfile
import unittest

import slicer


class AnatomyNetHaNBatchTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_batch_writes_segmentation_and_volumes_per_case(self):
        from headseg.io import write_volume
        from headseg.phantoms import make_head_phantom
        from headseg.slicer_glue import TaskLogic, batch_main, missing_packages

        class Logic(TaskLogic):
            task = "han"

        if not Logic().models() or missing_packages():
            self.skipTest("no han model package or Python packages installed")
        with tempfile.TemporaryDirectory() as folder:
            inputs = os.path.join(folder, "in")
            outputs = os.path.join(folder, "out")
            os.mkdir(inputs)
            phantom = make_head_phantom(seed=2, spacing=(1.5, 1.5, 2.0), noise_hu=5.0)
            write_volume(phantom.image, os.path.join(inputs, "case1.nrrd"))
            nodes_before = slicer.mrmlScene.GetNumberOfNodes()
            code = batch_main(["--input-dir", inputs, "--output-dir", outputs, "--device", "cpu"],
                              default_task="han")
            self.assertEqual(code, 0)
            self.assertTrue(os.path.isfile(os.path.join(outputs, "case1.seg.nrrd")))
            with open(os.path.join(outputs, "case1_volumes.csv"), newline="") as f:
                self.assertEqual(next(csv.reader(f)), ["structure", "side", "voxels", "volume_cm3"])
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes_before, "batch leaves the scene as it was")
