"""The samples both modules register with Slicer's Sample Data module, so that a new user can try each
module with one press.

* **Orbit:** a SYNTHETIC head CT made by :func:`headseg.synth.phantoms.make_head_phantom` the first time it is
  asked for (under a second) and kept in Slicer's cache folder; it has both orbits, the left recti
  thickened like thyroid eye disease, and a marker on the patient's left.
* **Head and neck:** a real radiotherapy CT of the OpenKBP challenge's test set (patient pt_286, the
  seven organs contoured; 128 x 128 x 128 voxels of 5.08 x 5.08 x 2.5 mm, 0.3 MB), shipped in
  ``AnatomyNetHaN/Resources/SampleData`` with its attribution (CC BY: Babier et al., Med Phys 2021; The
  Cancer Imaging Archive, Clark et al., J Digit Imaging 2013).

Registration uses only arguments that Slicer 5.6 and the current ``SampleDataLogic.
registerCustomSampleDataSource`` share (category, sampleName, uris, fileNames, nodeNames, checksums,
thumbnailFileName, customDownloader); the sample button calls ``customDownloader`` (SampleData.py,
``SampleDataWidget.setCategoriesFromSampleDataSources``), which makes the phantom if needed and loads it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from headseg.slicer.scene import PathLike, in_slicer_app, module_logic

__all__ = ["SAMPLE_CATEGORY", "Sample", "SAMPLES", "sample_file", "load_sample", "register_sample",
           "sha256_of"]

#: The Sample Data module's section both samples appear in.
SAMPLE_CATEGORY = "HeadSeg"


@dataclass(frozen=True)
class Sample:
    """One sample: what the Sample Data module shows and which file it loads."""

    task: str
    name: str  # the button's text (and the name SampleData.downloadSample finds it by)
    node_name: str  # the volume node it loads
    file_name: str
    bundled: bool  # True: shipped in the module's Resources/SampleData; False: made on first use
    sha256: Optional[str] = None  # of a bundled file


SAMPLES = {
    "orbit": Sample("orbit", "HeadSeg orbit phantom (synthetic)", "Orbit phantom CT", "HeadSegOrbitPhantom.nrrd",
                    bundled=False),
    "han": Sample("han", "HeadSeg head and neck CT (OpenKBP pt_286)", "OpenKBP pt_286 CT",
                  "OpenKBP_pt_286_CT.nii.gz", bundled=True,
                  sha256="b45a2a45bb465955429f9f2b7b628b2c128c24b9c734619543e473ae5c0ec550"),
}

#: The synthetic phantom of the orbit sample: seed and grid (the shipped orbit model's spacing).
PHANTOM_SEED = 3
PHANTOM_SPACING = (0.6, 0.6, 1.0)


def sha256_of(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _make_orbit_phantom(path: Path) -> Path:
    """Write the orbit sample's phantom CT to ``path`` (written beside it first, then renamed)."""
    from headseg.io import write_volume
    from headseg.synth.phantoms import make_head_phantom

    path.parent.mkdir(parents=True, exist_ok=True)
    phantom = make_head_phantom(seed=PHANTOM_SEED, spacing=PHANTOM_SPACING)
    handle, temp = tempfile.mkstemp(prefix=".headseg_phantom_", suffix=".nrrd", dir=str(path.parent))
    os.close(handle)
    try:
        write_volume(phantom.image, temp, overwrite=True)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path


def sample_file(task: str, data_dir: PathLike, cache_dir: PathLike) -> Path:
    """The file of ``task``'s sample: the bundled one in ``data_dir``, or the phantom in ``cache_dir``
    (made now if it is not there yet)."""
    sample = SAMPLES[task]
    if sample.bundled:
        path = Path(data_dir) / sample.file_name
        if not path.is_file():
            raise FileNotFoundError(f"The sample file {path} is missing; reinstall the HeadSeg extension.")
        return path
    path = Path(cache_dir) / sample.file_name
    return path if path.is_file() else _make_orbit_phantom(path)


def load_sample(task: str, data_dir: PathLike, cache_dir: PathLike):
    """Load ``task``'s sample CT as a volume node and return the node.

    In the Slicer application it goes through ``slicer.util.loadVolume`` (shown in the slice views, as
    the Sample Data module shows its samples); headless through the Volumes logic.
    """
    sample = SAMPLES[task]
    path = sample_file(task, data_dir, cache_dir)
    if in_slicer_app():
        import slicer

        return slicer.util.loadVolume(str(path), {"name": sample.node_name})
    node = module_logic("Volumes").AddArchetypeVolume(str(path), sample.node_name)
    if node is None:
        raise RuntimeError(f"Slicer could not read the sample {path}.")
    return node


def register_sample(task: str, data_dir: PathLike, thumbnail: Optional[PathLike] = None,
                    cache_dir: Optional[PathLike] = None) -> None:
    """Register ``task``'s sample with Slicer's Sample Data module (call once Slicer has started).

    ``data_dir`` is the module's ``Resources/SampleData``; ``cache_dir`` defaults to Slicer's cache folder
    (``slicer.app.cachePath``), where the phantom is kept once made.
    """
    import SampleData
    import slicer

    sample = SAMPLES[task]
    if cache_dir is None:
        cache_dir = os.path.join(slicer.app.cachePath, "HeadSeg")
    # The file the entry names: SampleData.downloadSample() (scripts) reads it through its URI; the button
    # calls customDownloader, which also makes the phantom on first use.
    path = Path(data_dir) / sample.file_name if sample.bundled else Path(cache_dir) / sample.file_name
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName=sample.name,
        uris=[path.resolve().as_uri()],
        fileNames=[sample.file_name],
        nodeNames=[sample.node_name],
        checksums=[f"SHA256:{sample.sha256}" if sample.sha256 else None],
        thumbnailFileName=str(thumbnail) if thumbnail else None,
        customDownloader=lambda source: load_sample(task, data_dir, cache_dir),
    )
