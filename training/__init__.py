"""``headseg-train``: train SV-net and AnatomyNet models from labelled head CTs (including segmentations
corrected in Slicer) with the two papers' recipes, and export them as ``headseg`` model packages.

Modules: ``datasets`` (finding, checking and splitting cases), ``losses`` (the SV-net paper's sigmoid
cross-entropy, the AnatomyNet paper's Dice + focal with masked and weighted variants), ``augment``, ``data``
(model-grid items and random windows), ``engine`` (the training loop), ``export`` and ``evaluate``
(model packages and their metrics), ``config`` (recipes in ``training/configs``), ``cli``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
