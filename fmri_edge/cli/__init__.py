"""The ``fmri-edge`` command line. Commands are thin: the work is in library functions.

- :mod:`fmri_edge.cli.decode`: predict, explain, adapt, info (numpy + onnxruntime);
- :mod:`fmri_edge.cli.data`: score, simulate, extract (no model);
- :mod:`fmri_edge.cli.develop`: train, report, export, bench (torch, imported only when they run).

Results go to stdout (a table, or one JSON document with ``--json``); progress, warnings and
errors go to stderr. A bad input is a one-line error naming the file, exit code 2.
"""
from fmri_edge.cli.common import EXIT_BAD_INPUT, EXIT_PARTIAL, app, main
from fmri_edge.cli import decode, data, develop  # noqa: E402,F401  (registers the commands, in this order)
from fmri_edge.cli.decode import adapt, explain, info, predict  # noqa: E402,F401
from fmri_edge.cli.data import extract, score, simulate  # noqa: E402,F401
from fmri_edge.cli.develop import bench, export, report, train  # noqa: E402,F401

__all__ = ["app", "main", "EXIT_BAD_INPUT", "EXIT_PARTIAL"]
