"""The batch script's core (what ``Resources/Scripts/AnatomyNetHaNBatch.py`` runs) inside the Slicer application."""

from __future__ import annotations

import unittest


class AnatomyNetHaNBatchTest(unittest.TestCase):
    def test_batch_writes_segmentation_and_volumes_per_case(self):
        from headseg.slicer.batch import batch_self_test

        batch_self_test("han", seed=2)
