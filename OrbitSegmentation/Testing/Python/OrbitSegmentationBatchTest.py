"""The batch script's core (what ``Resources/Scripts/OrbitSegmentationBatch.py`` runs) inside the Slicer application."""

from __future__ import annotations

import unittest


class OrbitSegmentationBatchTest(unittest.TestCase):
    def test_batch_writes_segmentation_and_volumes_per_case(self):
        from headseg.slicer.batch import batch_self_test

        batch_self_test("orbit")
