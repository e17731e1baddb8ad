"""Which atlas made the trials (issue 30): its file name, sha256, grid, voxel size and declared
space, recorded where extract writes (``fMRI_data.npz`` key ``atlas``, ``labels.json``), carried by
``train --data`` into ``results.json``, and by ``export`` into the model's metadata and card;
``info`` shows it and ``predict`` warns when trials made with one atlas meet a model trained on
another.

In an ``.npz`` the record is one JSON text as UTF-8 bytes (a uint8 array: numeric, so the safe reader
of :mod:`fmri_edge.data.io` reads it like any other array, without unpickling)."""

from __future__ import annotations

import json
from pathlib import Path

ATLAS_KEY = "atlas"
SFORM_SPACE = {
    4: "MNI152 (the header's sform code 4)",
    3: "Talairach (the header's sform code 3)",
    2: "aligned to a template the header does not name (sform code 2)",
    1: "scanner coordinates (sform code 1)",
}
_cache: dict[tuple, str] = {}


def sha256_of(path: Path) -> str:
    """The atlas file's sha256, computed once per file version (extract records it per participant)."""
    from fmri_edge.model.runtime import file_sha256

    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _cache:
        _cache[key] = file_sha256(path)
    return _cache[key]


def declared_space(path: Path) -> str:
    """The space the atlas says it is in: a BIDS ``space-`` entity in its name, else its header's
    sform (qform) code, else "not declared"."""
    from fmri_edge.imaging import space

    named = space.declared_space(path)
    if named:
        return f"{named} (file name)"
    try:
        import nibabel

        h = nibabel.load(str(path)).header
        code = int(h["sform_code"]) or int(h["qform_code"])
    except Exception:  # the atlas was read already by the safe reader; the header's codes are extra
        return "not declared"
    return SFORM_SPACE.get(code, "not declared")


def provenance(atlas) -> dict:
    """The record of an :class:`~fmri_edge.imaging.extract.Atlas` (path, labels, affine, grid)."""
    import numpy as np

    path = Path(atlas.path)
    zooms = np.sqrt((np.asarray(atlas.affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return {
        "file": path.name,
        "sha256": sha256_of(path),
        "grid": atlas.grid,
        "shape": [int(s) for s in atlas.labels.shape[:3]],
        "voxel_mm": [round(float(z), 4) for z in zooms],
        "space": declared_space(path),
    }


def as_array(record: dict):
    import numpy as np

    return np.frombuffer(json.dumps(record, sort_keys=True).encode("utf-8"), dtype=np.uint8).copy()


def read(path: str | Path) -> dict | None:
    """The atlas record of trials written by extract (None: not recorded, or not readable)."""
    from fmri_edge.errors import InputError
    from fmri_edge.data import io

    try:
        import numpy as np

        raw = np.asarray(io.read_array(Path(path), ATLAS_KEY))
        if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > 1 << 16:
            return None
        record = json.loads(raw.tobytes().decode("utf-8"))
    except (InputError, ValueError, TypeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("sha256"), str) else None


def describe(record: dict | None) -> str:
    """One line: 'BN_Atlas_246_2mm.nii.gz (sha256 3f2a…, (91×109×91, 2×2×2 mm, …), space MNI152 …)'."""
    if not isinstance(record, dict):
        return "not recorded"
    return (
        f"{record.get('file')} (sha256 {str(record.get('sha256'))[:12]}…, {record.get('grid')}, "
        f"space {record.get('space')})"
    )


def study_atlas(sources) -> dict | None:
    """The one atlas of a study's trials (``io.Source`` list); trials made with two atlases are refused."""
    from fmri_edge.errors import InputError

    seen: dict[str, tuple] = {}
    for src in sources:
        rec = read(src.path)
        if rec is not None:
            seen.setdefault(rec["sha256"], (rec, src.path))
    if len(seen) > 1:
        (a, pa), (b, pb) = list(seen.values())[:2]
        raise InputError(
            pb,
            f"its trials were made with atlas {describe(b)}, those of {pa} with {describe(a)}; "
            "one study's trials need one atlas: extract them again with the same --atlas",
        )
    return next(iter(seen.values()))[0] if seen else None
