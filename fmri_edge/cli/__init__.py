"""The ``fmri-edge`` command line. Commands are thin: the work is in library functions.

- :mod:`fmri_edge.cli.decode`: predict; :mod:`fmri_edge.cli.explanation`: explain; :mod:`fmri_edge.cli.model`: adapt, info (numpy + onnxruntime);
- :mod:`fmri_edge.cli.data`: score, simulate; :mod:`fmri_edge.cli.extraction`: extract (no model);
- :mod:`fmri_edge.cli.live`: stream (real time at the scanner);
- :mod:`fmri_edge.cli.registration`: register (the atlas into the participant's space, at session start);
- :mod:`fmri_edge.cli.build`: train, report, export, bench (torch, imported only when they run).

Results go to stdout (a table, or one JSON document with ``--json``); progress, warnings and
errors go to stderr. A bad input is a one-line error naming the file, exit code 2.
"""

import os
import sys

from fmri_edge.cli.common import EXIT_BAD_INPUT, EXIT_PARTIAL, app, main
from fmri_edge.cli import decode, explanation, model, live, registration, data, extraction, build  # noqa: E402,F401  (registers the commands, in this order)
from fmri_edge.cli.decode import predict  # noqa: E402,F401
from fmri_edge.cli.explanation import explain  # noqa: E402,F401
from fmri_edge.cli.model import adapt, info  # noqa: E402,F401
from fmri_edge.cli.data import score, simulate  # noqa: E402,F401
from fmri_edge.cli.extraction import extract  # noqa: E402,F401
from fmri_edge.cli.live import stream  # noqa: E402,F401
from fmri_edge.cli.registration import register  # noqa: E402,F401
from fmri_edge.cli.build import bench, export, report, train  # noqa: E402,F401

__all__ = ["app", "main", "run", "EXIT_BAD_INPUT", "EXIT_PARTIAL"]

# Commands whose numpy work is small (per-trial statistics, matrices of a few hundred rows): for
# them OpenBLAS's thread pool only costs start-up (measured in docs/speed.md). Set before numpy is
# first imported; an OPENBLAS_NUM_THREADS of the user's wins. They also end without the
# interpreter's teardown (its cost is in docs/speed.md): their files are closed and their output
# is flushed first.
SMALL_NUMPY_COMMANDS = frozenset(
    {"predict", "explain", "adapt", "info", "score", "simulate", "stream"}
)


def run() -> None:
    """The ``fmri-edge`` console script (and ``python -m fmri_edge.cli``)."""
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    quick = (
        command in SMALL_NUMPY_COMMANDS and "--scheduler" not in sys.argv
    )  # Dask's shutdown stays as it is
    if quick:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        app(prog_name="fmri-edge")
        code = 0
    except SystemExit as e:
        if not quick:
            raise
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    if quick:
        os._exit(code)
    sys.exit(code)
