"""The one type of a path argument: a string or any ``os.PathLike`` (``pathlib.Path`` among them)."""

from __future__ import annotations

import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]
