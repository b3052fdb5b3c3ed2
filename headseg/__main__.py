"""``python -m headseg`` = the ``headseg`` command (what the Slicer modules start in a subprocess)."""

import sys

from headseg.cli import main

sys.exit(main())
