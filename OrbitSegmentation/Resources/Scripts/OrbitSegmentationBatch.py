"""OrbitSegmentation's headless batch (`Slicer --no-main-window --python-script <this file> --input-dir IN --output-dir OUT`):
the panel's logic on every CT of a folder; options and outputs in README.md ("Headless batch with Slicer") and `headseg.slicer.batch.batch_main`."""

from __future__ import annotations

import importlib.util
import os
import sys

if importlib.util.find_spec("headseg") is None:  # a source checkout: headseg is three folders up
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
from headseg.slicer.batch import batch_main  # noqa: E402

sys.exit(batch_main(sys.argv[1:], default_task="orbit"))  # no __main__ guard: --python-script runs the file as is
