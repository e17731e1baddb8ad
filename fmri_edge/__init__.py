"""fmri-edge: decode emotional valence from region-wise fMRI on ordinary CPUs.

The runtime (loading, validation, inference, scoring, CLI) needs numpy and onnxruntime only;
``fmri_edge.training`` (torch) is imported lazily by the ``train`` and ``export`` commands.
"""
__version__ = "0.1.0"
