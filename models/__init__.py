"""Shipped fmri-edge models (ONNX) and their model cards; installed as ``fmri_edge.models``."""
