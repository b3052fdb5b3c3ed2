"""``headseg serve``: a DICOM storage node that segments the CT series it receives and sends the RT
Structure Set and/or SEG back (README, "As a DICOM node"). Needs the extra ``headseg[node]`` (pynetdicom).

* ``config``: the TOML file, checked once;
* ``receiver``: C-ECHO and C-STORE SCP with the AE title and host allow-lists;
* ``queue``: received series and jobs on disk, surviving restarts;
* ``worker``: a job through ``headseg.run.batch`` (the same files as ``headseg segment``);
* ``sender``: C-STORE SCU or folder copy, with retries and backoff;
* ``server``: the threads of one node, signals, ``--status``.
"""

from headseg.node.config import NodeConfig, load_config

__all__ = ["NodeConfig", "load_config"]
