"""``python -m fmri_edge.training.bench.process_usage CMD ARGS…``: run one command, its stdout
discarded, and print one JSON document: wall seconds from its start to its exit, its peak resident
memory (KB), its exit code and the end of its stderr. A small process of its own starts the
command, so neither number includes the (large) process that asks: a child forked from there would
inherit its resident memory until it execs."""

import json
import os
import subprocess
import sys
import time


def main(cmd: list[str]) -> dict:
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t
    return {
        "wall_s": elapsed,
        "maxrss_kb": usage.ru_maxrss,
        "code": os.waitstatus_to_exitcode(status),
        "stderr": err.decode(errors="replace")[-800:],
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
