"""Where ``stream``'s answers go as they come: whole rows on disk (``--out``, flushed and fsync'ed)
and one line per answer over the network to the stimulus program (``--send udp://…|tcp://…``).
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from urllib.parse import urlsplit

from fmri_edge.errors import InputError, UsageError


class RowFile:
    """Submission rows appended one at a time, each whole on disk (written, flushed, fsync'ed) before
    the next volume is read; a failed write (full disk) is cut back to the last whole row and the
    file is closed, so the file only ever holds whole rows."""

    def __init__(self, path: Path, force: bool = False):
        from fmri_edge.data.submission import HEADER, PROB_COLUMNS, check_new

        self.path = check_new(path, force)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self.size, self.rows, self.error = 0, 0, None
        self.write(",".join(HEADER + PROB_COLUMNS) + "\n")
        if self.error:
            raise self.error

    def write(self, line: str) -> bool:
        if self.fd is None:
            return False
        data = line.encode()
        held = signal.pthread_sigmask(
            signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}
        )  # no half row on Ctrl-C
        try:
            written = 0
            while written < len(data):
                written += os.write(self.fd, data[written:])
            os.fsync(self.fd)
        except OSError as e:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            self.close()
            self.error = InputError(
                self.path,
                f"cannot write ({e.strerror or e}); {self.rows} whole row(s) kept, "
                "the answers go on on stdout",
            )
            return False
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        self.size += len(data)
        return True

    def row(self, participant: str, a) -> bool:
        """One answer (a :class:`fmri_edge.realtime.stream.Answer`) as a whole row; False once the disk refused."""
        ok = self.write(
            f"{participant},{a.trial},{a.valence_class},{a.valence_level},"
            + ",".join(f"{p:.4f}" for p in a.probs)
            + "\n"
        )
        self.rows += ok
        return ok

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Sender:
    """Answers as JSON lines to ``udp://HOST:PORT`` or ``tcp://HOST:PORT`` (PsychoPy, Psychtoolbox)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("udp", "tcp") or not parts.hostname or not parts.port:
            raise UsageError(f"--send {url}: give udp://HOST:PORT or tcp://HOST:PORT")
        self.url, self.kind, self.address = url, parts.scheme, (parts.hostname, parts.port)
        self.error = None
        try:
            if self.kind == "tcp":
                self.sock = socket.create_connection(self.address, timeout=2.0)
            else:
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.sock.connect(self.address)
        except OSError as e:
            raise UsageError(
                f"--send {url}: no receiver ({e.strerror or e}); start the listener first"
            ) from None

    def send(self, line: str) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.sendall(line.encode() + b"\n")
            return True
        except OSError as e:
            self.error = UsageError(
                f"--send {self.url}: the receiver stopped listening ({e.strerror or e}); "
                "answers go on on stdout"
            )
            self.close()
            return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
