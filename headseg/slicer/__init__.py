"""The Slicer layer of HeadSeg: everything the OrbitSegmentation and AnatomyNetHaN modules share.

Modules, by job:

* ``scene``        -- the MRML scene (the application's, or a headless one from the slicer-core wheel) and
  the nodes HeadSeg reads and writes (volumes, ROI boxes, subject hierarchy, Slicer's writers);
* ``segments``     -- segments <-> label-set structures (names, colours, terminology), result import,
  segmentation -> label map;
* ``terminology``  -- HeadSeg's own Slicer terminology file (``Resources/HeadSeg.term.json``);
* ``tables``       -- the volume table and its CSV, and :class:`~headseg.slicer.tables.VolumeFollower`, which
  keeps it in step with every edit;
* ``training_set`` -- "Add to training set" (the files and manifest row ``headseg-train`` reads);
* ``runs``         -- one segmentation run in a ``headseg segment`` child process;
* ``review``       -- the uncertainty map as the slice views' foreground, doubt and flags on the segmentation
  as edited, a structure's most uncertain region;
* ``followup``     -- "Compare with earlier scan": two segmentations of the scene through ``headseg.review.compare``;
* ``logic``        -- :class:`~headseg.slicer.logic.TaskLogic`, the Qt-free logic both modules subclass;
* ``batch``        -- the modules' headless batch scripts, on ``headseg.run.batch``;
* ``sample_data``  -- the samples both modules register with Slicer's Sample Data module;
* ``panel``        -- the widget behaviour both modules share (imports Qt only inside its methods).

Import rules (tested by reading the imports, ``Testing/slicer/test_package_rules.py``): only the two
Slicer modules, their batch scripts and the tests import this package; the rest of ``headseg`` never
does, and this package never imports ``headseg.cli``. ``slicer``, ``vtk`` and ``qt`` are imported inside
functions, so every module here imports in plain Python.
"""
