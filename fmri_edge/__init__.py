"""fmri-edge: decode emotional valence from region-wise fMRI on ordinary CPUs.

The face, for notebooks and scripts (imported on first use, so ``import fmri_edge`` costs nothing):

- :class:`Decoder` — ``Decoder().predict(trials, participants)`` gives the answers of
  ``fmri-edge predict`` (CLASS, LEVEL, probabilities, per-region scores), alignment included;
- :func:`load_trials` — a ``.npy``/``.npz`` of trials, read safely (nothing is unpickled);
- :func:`extract` — a NIfTI run or a BIDS study → trials (``fmri-edge extract``);
- :func:`score` — the challenge score and the paper's metrics (``fmri-edge score``);
- :func:`explain` — which regions drive the answers (``fmri-edge explain``);
- ``fmri_edge.training.train`` / ``fmri_edge.training.onnx_export`` — the training side (torch).

The runtime needs numpy and onnxruntime only; :mod:`fmri_edge.training` (torch) is never imported
by it.

Examples
--------
>>> from fmri_edge import Decoder
>>> Decoder().info.n_regions, Decoder().info.n_times
(246, 25)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_FACE = {
    "Decoder": "fmri_edge.decoding.decoder",
    "Predictions": "fmri_edge.decoding.decoder",
    "load_trials": "fmri_edge.data.io",
    "extract": "fmri_edge.imaging.trials",
    "Extraction": "fmri_edge.imaging.trials",
    "score": "fmri_edge.evaluation.scoring",
    "explain": "fmri_edge.explanation.regions",
    "InputError": "fmri_edge.errors",
    "UsageError": "fmri_edge.errors",
}
__all__ = ["__version__", *_FACE]


def __getattr__(name: str):
    """PEP 562: the face's names are imported when first used."""
    if name in _FACE:
        value = getattr(importlib.import_module(_FACE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fmri_edge' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_FACE])
