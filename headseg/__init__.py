"""HeadSeg core: deep-learning segmentation of head CT, shared by the Slicer modules, CLI and training."""

__version__ = "0.1.0"
