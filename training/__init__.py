"""``headseg-train``: train SV-net and AnatomyNet models from labelled head CTs (including segmentations
corrected in Slicer) with the seed papers' recipes, and export them as ``headseg`` model packages.

Modules: ``datasets`` (finding, checking and splitting cases), ``losses`` (seed 000's sigmoid
cross-entropy, seed 004's Dice + focal with masked and weighted variants), ``augment``, ``data``
(model-grid items and random windows), ``engine`` (the training loop), ``export`` and ``evaluate``
(model packages and their metrics), ``config`` (recipes in ``training/configs``), ``cli``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
