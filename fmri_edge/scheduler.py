"""The connection to a Dask cluster (the optional extra ``pip install 'fmri-edge[dask]'``), shared by
``predict``, ``extract`` and ``train`` (``--scheduler local:N|tcp://HOST:PORT``).

:func:`connect` gives a ``distributed.Client`` (a ``LocalCluster`` of N processes for ``local:N``);
:func:`result` turns a lost cluster into one line (:class:`ClusterError`, exit 2). Nothing of Dask is
imported until a cluster is asked for.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import CancelledError
from contextlib import contextmanager

from fmri_edge.errors import UsageError

CONNECT_TIMEOUT = 10  # seconds to reach a scheduler
EXTRA = "pip install 'fmri-edge[dask]'"


class ClusterError(UsageError):
    """The cluster cannot be reached or went away mid-run: one line, exit 2, nothing written."""


def load_distributed():
    """The ``distributed`` module, or a one-line :class:`UsageError` naming the extra to install."""
    try:
        import distributed
    except ImportError as e:
        raise UsageError(f"--scheduler needs Dask ({e.name or e}): {EXTRA}") from None
    return distributed


def result(future, address: str, distributed):
    """A future's result; a lost cluster is one line (a task's own InputError goes on as it is)."""
    try:
        return future.result()
    except distributed.KilledWorker as e:
        raise ClusterError(
            f"Dask workers at {address} died running one task again and again ({e}); "
            "check their memory limit and logs; nothing written"
        ) from None
    except (CancelledError, distributed.comm.CommClosedError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or (str(e).splitlines() or [type(e).__name__])[0][:100]
        raise ClusterError(
            f"lost the Dask cluster at {address} mid-run ({reason}); nothing written"
        ) from None


def parse_local(address: str) -> int | None:
    """``local:N`` → N (None for any other address)."""
    if not address.startswith("local:"):
        return None
    n = address[len("local:") :]
    if not n.isdigit() or int(n) < 1:
        raise UsageError(
            f"--scheduler {address}: expected local:N with N ≥ 1 workers, or a scheduler "
            "address such as tcp://host:8786"
        )
    return int(n)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def connect(address: str, threads: int = 0):
    """A ``distributed.Client`` for ``address`` and the onnxruntime threads per task: ``threads``
    if given (> 0); otherwise, for ``local:N`` (N worker processes of one Dask thread), the cores
    shared among the N; for a scheduler's workers 1 per task, since a Dask worker already runs one
    task per thread it was given (``dask worker --nthreads``, a SLURMCluster's ``cores``)."""
    distributed = load_distributed()
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its reconnect warnings would bury the one-line error
    try:
        n = parse_local(address)
        if n is not None:
            with (
                distributed.LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                    silence_logs=logging.CRITICAL,
                ) as lc,
                distributed.Client(lc) as client,
            ):
                yield client, threads or max(1, cores() // n)
            return
        try:
            client = distributed.Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as e:
            raise ClusterError(
                f"cannot reach a Dask scheduler at {address} ({str(e).splitlines()[0][:120]}); "
                "start one (e.g. dask_jobqueue.SLURMCluster, see the README) or use "
                "--scheduler local:N"
            ) from None
        try:
            yield client, threads or 1
        finally:
            client.close(timeout=CONNECT_TIMEOUT)
    finally:
        quiet.setLevel(level)
