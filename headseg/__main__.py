"""``python -m headseg`` = the ``headseg`` command (what the Slicer modules start in a subprocess)."""

import sys

from .cli import main

sys.exit(main())
