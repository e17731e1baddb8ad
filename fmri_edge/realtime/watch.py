"""Volumes arriving in a folder one file per volume, as a scanner or a converter exports them.

Numpy and the standard library only; file events come from ``watchfiles`` (the ``realtime`` extra,
inotify on Linux) when it is installed and ``poll`` is not asked for, otherwise the folder is
listed every ``poll`` seconds (network mounts give no file events).

What counts
- **Order** is the volume number in the file name (its last group of digits: ``img-00001-00005.nii``
  → 5, Siemens ideacmdtool ``001_000005_000123.dcm`` → 123), never arrival order. Volume ``k``
  (0-based) is the file numbered ``first_volume + k``.
- **Series**: the name with its volume number masked (``img-00001-#.nii``). ``series_choice``
  (``--series``) names it: the masked name, or the series number (the last group of digits before
  the volume number: 13 for ``001_000013_000001.dcm``). Otherwise the run's first volume chooses it:
  among the files of the first listing that holds volumes, the one numbered ``first_volume``, else
  the lowest number — never directory order, so a file of another series arriving in the same moment
  does not capture the stream. Files of another series are reported once per series and ignored.
  New files are always taken in volume-number order.
- **Complete** means the file decodes (``reader(path)`` returns); scanners and network shares
  write in place, so a file that does not decode yet is retried on every file event and every
  ``RETRY_S`` until it does or ``timeout`` seconds have passed since it was first seen; then it
  is declared corrupt.
- **Missing**: volume k was not seen ``timeout`` seconds after a later volume completed; the
  **end** of the run: no next volume ``timeout`` seconds after the last one completed.
- Files already in the folder at start are reported and not used (``include_existing`` uses them).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from fmri_edge.errors import InputError, UsageError

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".ima")
RETRY_S = 0.05  # rt-cloud's retry interval for files still being written
TICK_S = 0.05  # longest wait between two looks at deadlines
NUMBER = re.compile(r"\d+")


def volume_name(name: str) -> tuple[str, int] | None:
    """``img-00001-00005.nii`` → (``img-00001-#.nii``, 5); None for a file that is not a volume
    (another suffix, no digits, hidden or temporary files)."""
    lower = name.lower()
    if name.startswith(".") or not lower.endswith(VOLUME_SUFFIXES):
        return None
    suffix = next(s for s in sorted(VOLUME_SUFFIXES, key=len, reverse=True) if lower.endswith(s))
    stem = name[: len(name) - len(suffix)]
    found = list(NUMBER.finditer(stem))
    if not found:
        return None
    last = found[-1]
    return stem[: last.start()] + "#" + stem[last.end() :] + name[len(stem) :], int(last.group())


@dataclass
class Arrival:
    """One volume that decoded: its index, file, what the reader returned and when it was complete."""

    index: int
    path: Path
    decoded: tuple
    complete_ns: int  # the file's last modification (time.time_ns clock): when it became complete
    read_ms: float  # time spent decoding it (the successful read)
    seen_ns: int = 0  # when that read started (time.time_ns clock)


@dataclass
class Missing:
    """Volume ``index`` will not come: not seen, corrupt, or after the end of the run (``end``)."""

    index: int
    problem: InputError | None
    end: bool = False


@dataclass
class _Pending:
    path: Path
    first_seen: float
    last_error: str = ""
    attempts: int = 0


@dataclass
class VolumeFolder:
    """Watch ``folder`` for volumes of one series; :meth:`collect` returns what arrived since."""

    folder: Path
    reader: Callable[[Path], tuple]
    timeout: float = 10.0
    first_volume: int = 1
    poll: float | None = None
    include_existing: bool = False
    clock: Callable[[], float] = time.monotonic
    series: str | None = None
    series_choice: str | None = None  # --series: a masked name or a series number
    done: set = field(default_factory=set)  # indices decoded or declared missing
    pending: dict = field(default_factory=dict)  # name → _Pending (seen, not decoded yet)
    highest: int = -1  # highest index decoded
    last_complete: float | None = None  # clock time of the last decoded volume
    _known: dict = field(default_factory=dict)  # name → index (files of the series seen)
    _indices: set = field(default_factory=set)  # the indices of _known
    _reported: set = field(default_factory=set)
    _gap_since: dict = field(
        default_factory=dict
    )  # index → clock time a later volume made it a gap
    _events = None
    ended: bool = False
    retried: int = 0  # volumes that decoded only after a failed try (in writing)

    def start(self) -> list[InputError]:
        """Check the folder, note the files already there, and start watching."""
        folder = self.folder
        if not folder.exists():
            raise InputError(
                folder,
                "watch folder does not exist; create it (or mount the scanner's share) first",
            )
        if not folder.is_dir():
            raise InputError(
                folder, "is not a folder; give the folder the scanner exports volumes into"
            )
        try:
            names = self._listing()
        except OSError as e:
            raise InputError(folder, f"watch folder cannot be read ({e.strerror or e})") from None
        notes = []
        existing = sorted(n for n in names if volume_name(n))
        if existing and not self.include_existing:
            self._reported.update(existing)
            notes.append(
                InputError(
                    folder,
                    f"{len(existing)} volume file(s) already in the folder at start "
                    f"({_span(existing)}) are not used: only volumes that arrive after "
                    "the stream starts are read (--include-existing uses them)",
                    outcome="ignored",
                )
            )
        if self.poll is None:
            try:
                import watchfiles
            except ImportError:
                self.poll = TICK_S
                notes.append(
                    InputError(
                        folder,
                        f"watchfiles is not installed (pip install 'fmri-edge[realtime]'): "
                        f"polling the folder every {TICK_S * 1000:.0f} ms",
                        outcome="note",
                    )
                )
            else:
                self._events = watchfiles.watch(
                    folder,
                    watch_filter=None,
                    debounce=int(TICK_S * 1000),
                    step=1,
                    rust_timeout=int(TICK_S * 1000),
                    yield_on_timeout=True,
                    recursive=False,
                )
        return notes

    def wait(self) -> None:
        """Until something may have changed: a file event (or ``TICK_S``), or ``poll`` seconds."""
        if self._events is not None:
            next(self._events)
        else:
            time.sleep(min(self.poll, TICK_S) if self.pending or self._gap_since else self.poll)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None

    def _listing(self) -> list[str]:
        with os.scandir(self.folder) as it:
            return [e.name for e in it if e.is_file()]

    def collect(self) -> Iterator[Arrival | Missing | InputError]:
        """Everything new since the last call, volumes in index order; lazily: a volume is read
        only when the one before it has been taken (so its answers can be written first)."""
        now = self.clock()
        try:
            names = self._listing()
        except OSError as e:
            yield InputError(
                self.folder,
                f"watch folder cannot be listed ({e.strerror or e}); retrying",
                outcome="note",
            )
            return
        new = sorted(
            (
                (parsed[1], name, parsed[0])
                for name in names
                if name not in self._known and name not in self._reported
                for parsed in [volume_name(name)]
                if parsed is not None
            )
        )
        if self.series is None and new:
            self.series = self._choose_series(new)
            if self.series is None:  # --series names none of these: wait for its files
                for _, name, key in new:
                    if key not in self._reported:
                        self._reported.add(key)
                        yield InputError(
                            self.folder / name,
                            f"a file of another series ({key}; --series "
                            f"{self.series_choice}): ignored, with any more of "
                            "that series",
                            outcome="ignored",
                        )
                    self._reported.add(name)
                new = []
        for number, name, key in new:
            if key != self.series:
                self._reported.add(name)
                if key not in self._reported:
                    self._reported.add(key)
                    yield InputError(
                        self.folder / name,
                        f"a file of another series ({key}; the stream follows "
                        f"{self.series}): ignored, with any more of that series",
                        outcome="ignored",
                    )
                continue
            index = number - self.first_volume
            if index < 0:
                self._reported.add(name)
                yield InputError(
                    self.folder / name,
                    f"volume number {number} is below the first volume "
                    f"({self.first_volume}, --first-volume): ignored",
                    outcome="ignored",
                )
                continue
            if index in self._indices:
                self._reported.add(name)
                yield InputError(
                    self.folder / name,
                    f"a second file for volume {number} (index {index}): "
                    "ignored, the first one counts",
                    outcome="ignored",
                )
                continue
            self._known[name] = index
            self._indices.add(index)
            self.pending[name] = _Pending(self.folder / name, now)
        yield from self._try_pending(now)
        yield from self._gaps(now)

    def _choose_series(self, new: list) -> str | None:
        """The series of the run among new files (number, name, key), sorted by volume number."""
        if self.series_choice is not None:
            want = self.series_choice
            for _, _, key in new:
                if key == want or (want.isdigit() and series_number(key) == int(want)):
                    return key
            return None
        first = [key for number, _, key in new if number == self.first_volume]
        return first[0] if first else new[0][2]

    def _try_pending(self, now: float) -> Iterator[Arrival | Missing]:
        for name, p in sorted(self.pending.items(), key=lambda kv: self._known[kv[0]]):
            index = self._known[name]
            try:
                st = p.path.stat()
                seen_ns = time.time_ns()
                t0 = time.perf_counter()
                decoded = self.reader(p.path)
                read_ms = (time.perf_counter() - t0) * 1e3
            except UsageError:  # e.g. DICOM without pydicom: no use retrying
                raise
            except (InputError, OSError, ValueError, EOFError) as e:
                p.attempts += 1
                p.last_error = (
                    e.problem if isinstance(e, InputError) else str(e) or type(e).__name__
                )
                if now - p.first_seen >= self.timeout:
                    del self.pending[name]
                    self.done.add(index)
                    yield Missing(
                        index,
                        InputError(
                            p.path,
                            f"did not decode within --volume-timeout "
                            f"{self.timeout:g} s ({p.last_error}): skipped",
                            outcome="skipped",
                        ),
                    )
                continue
            del self.pending[name]
            self.done.add(index)
            self.retried += p.attempts > 0
            self._gap_since.pop(index, None)
            if index > self.highest:
                for gap in range(self.highest + 1, index):
                    self._gap_since.setdefault(gap, now)
                self.highest = index
            self.last_complete = self.clock()
            yield Arrival(index, p.path, decoded, st.st_mtime_ns, read_ms, seen_ns)

    def _gaps(self, now: float) -> Iterator[Missing]:
        for index, since in sorted(self._gap_since.items()):
            if index in self._indices:  # its file came (decoded, or pending with its own timeout)
                del self._gap_since[index]
                continue
            if now - since >= self.timeout:
                del self._gap_since[index]
                self.done.add(index)
                number = index + self.first_volume
                yield Missing(
                    index,
                    InputError(
                        self.folder,
                        f"volume {number} (index {index}) never came: "
                        f"later volumes arrived {self.timeout:g} s ago "
                        "(--volume-timeout)",
                    ),
                )
        if (
            self.last_complete is not None
            and not self.pending
            and not self.ended
            and now - self.last_complete >= self.timeout
        ):
            self.ended = True
            yield Missing(self.highest + 1, None, end=True)


def series_number(key: str) -> int | None:
    """The series number of a masked name: its last group of digits before the volume number."""
    found = NUMBER.findall(key[: key.index("#")])
    return int(found[-1]) if found else None


def _span(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}"
