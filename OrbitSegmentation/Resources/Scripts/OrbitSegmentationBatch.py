"""Segment every CT of a folder without a window, with the same logic as the OrbitSegmentation panel.

    Slicer --no-main-window --python-script <this file> --task orbit --input-dir IN --output-dir OUT

Writes <case>.seg.nrrd and <case>_volumes.csv per case and volumes.csv for all cases into OUT.
Options: --model NAME_OR_FOLDER, --device auto|cuda|cpu, --structures key1,key2, --overwrite.
Outside Slicer the same job is `headseg segment IN --task orbit -o OUT` (see docs/slicer.md).
"""

from __future__ import annotations

import os
import sys

try:
    import headseg  # noqa: F401  (installed next to the scripted modules)
except ImportError:  # run from a source checkout: <repo>/OrbitSegmentation/Resources/Scripts/OrbitSegmentationBatch.py
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))

from headseg.slicer_glue import batch_main  # noqa: E402

# No __main__ guard: Slicer's --python-script runs the file's code as it is.
sys.exit(batch_main(sys.argv[1:], default_task="orbit"))
