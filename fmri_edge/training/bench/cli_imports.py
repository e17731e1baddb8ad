"""``python -X importtime -m fmri_edge.training.bench.cli_imports ARGS…``: run ``fmri-edge ARGS…``
in this process and, at exit, print to stderr ``HEAVY`` and the JSON list of the heavy modules
(torch, onnx, onnxscript) it imported. Read by
:func:`fmri_edge.training.bench.coldstart.import_profile`. Its parent packages hold no imports,
so the profile shows the command's own."""

import atexit
import json
import runpy
import sys

HEAVY = ("torch", "onnx", "onnxscript")

if __name__ == "__main__":
    sys.argv = ["fmri-edge", *sys.argv[1:]]
    atexit.register(
        lambda: print("HEAVY" + json.dumps([m for m in HEAVY if m in sys.modules]), file=sys.stderr)
    )
    runpy.run_module("fmri_edge.cli", run_name="__main__")
