"""Decode trials while the scan runs: volumes arrive one file per volume, each trial is answered as
soon as the volumes its window needs are in (``fmri-edge stream``).

Numpy, nibabel and onnxruntime only (no torch). Pieces, each from the module that owns it:
- arrival, order, completeness, gaps: :mod:`fmri_edge.realtime.watch`;
- reading a volume: :func:`fmri_edge.imaging.volumes.read_volume` (NIfTI) or :func:`fmri_edge.imaging.dicom.read_volume`;
- region means: :class:`fmri_edge.imaging.volumes.RegionIndex`, the atlas put on the volumes' grid once, as
  ``extract`` does;
- the clock and the cut: ``extract``'s :class:`~fmri_edge.imaging.extract.Window`, ``read_events``,
  ``volume_times`` and ``cut_trials`` — volume k at (k + slice_time_ref) · TR, each trial cut exactly
  as ``extract`` cuts it;
- answers: :func:`fmri_edge.decoding.answers.answer`, the same call ``predict`` makes;
- realignment (on by default): each volume's rigid motion to a reference (``reference``, else the
  run's first volume after ``dummy_scans``), :class:`fmri_edge.realtime.realign.Realigner`; region means from
  the atlas's sample points moved by that motion, :class:`fmri_edge.realtime.realign.MovedRegions`; motion
  parameters and framewise displacement per volume, :mod:`fmri_edge.imaging.motion` (``motion_out``), and
  each answer's ``fd_max`` / ``motion_flag`` over its window.

Subject alignment without the future (:class:`Alignment`): ``running`` (default) aligns each trial
with the statistics of the trials answered so far once there are :data:`MIN_ALIGN_TRIALS` of them,
the population's defaults before; ``stats`` uses a previous run of the same participant; ``none``
the population's defaults for every trial (docs/realtime.md measures each).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fmri_edge.data import io
from fmri_edge.errors import InputError, UsageError
from fmri_edge.imaging.events import read_events
from fmri_edge.imaging.window import Window
from fmri_edge.imaging.motion import FD_THRESHOLD, MotionFile
from fmri_edge.decoding.answers import Batch, answer
from fmri_edge.model.runtime import Model
from fmri_edge.realtime.feedback import RowFile, Sender
from fmri_edge.realtime.schedule import (  # noqa: F401  (stream.Alignment etc., as before)
    ALIGN_MODES,
    EPS,
    Alignment,
    Schedule,
    Trial,
    stats_from_trials,
)
from fmri_edge.realtime.watch import Arrival, Missing, VolumeFolder

DEFAULT_TIMEOUT = 10.0


# ---- the loop ---------------------------------------------------------------------------------------------


@dataclass
class Answer:
    trial: int  # 1-based row of the events file
    onset: float
    trial_type: str
    valence_class: int
    valence_level: int
    probs: list  # class probabilities, the model's class order
    volume: int  # the volume (0-based) that completed the window
    file: str
    latency_ms: float  # from that volume's file becoming complete (its mtime) to the answer
    aligned: str
    fd_max: float | None = None  # the largest framewise displacement (mm) of the window's volumes
    motion_flag: bool | None = None  # any of them above --fd-threshold (None: not realigned)

    def as_json(self, participant: str) -> str:
        return json.dumps(
            {
                "participant": participant,
                "trial": self.trial,
                "onset": self.onset,
                "trial_type": self.trial_type,
                "CLASS": self.valence_class,
                "LEVEL": self.valence_level,
                "probs": [round(p, 6) for p in self.probs],
                "volume": self.volume,
                "file": self.file,
                "latency_ms": round(self.latency_ms, 2),
                "aligned": self.aligned,
                "fd_max": None if self.fd_max is None else round(self.fd_max, 4),
                "motion_flag": self.motion_flag,
            }
        )


@dataclass
class Timing:
    """Per volume: from its file's last change to the read that decoded it (wait: event delivery,
    retries), the read (decode) and the region means (reduce), in ms; per answer: latency in ms."""

    wait_ms: list = field(default_factory=list)
    read_ms: list = field(default_factory=list)
    answer_ms: list = field(default_factory=list)  # per answer: cut, alignment, model, outputs
    reduce_ms: list = field(default_factory=list)
    realign_ms: list = field(
        default_factory=list
    )  # per volume: the motion estimate (realignment on)
    latency_ms: list = field(default_factory=list)


@dataclass
class StreamResult:
    n_trials: int
    answered: int = 0
    incomplete: list = field(default_factory=list)  # InputError per trial not answered
    problems: list = field(default_factory=list)  # every other problem or note
    interrupted: str | None = None  # "SIGINT" / "SIGTERM"
    out_error: InputError | None = None
    send_error: UsageError | None = None
    timing: Timing = field(default_factory=Timing)
    motion_error: InputError | None = None
    flagged: int = 0  # answers with motion_flag

    @property
    def complete(self) -> bool:
        return self.answered == self.n_trials and not self.out_error and not self.send_error


class VolumeReader:
    """(float32 (X, Y, Z), 4×4 affine, series id or None) of one volume file: NIfTI by
    :func:`fmri_edge.imaging.volumes.read_volume`, DICOM by a :class:`fmri_edge.imaging.dicom.Reader` kept for the series."""

    def __init__(self):
        self.dicom = None

    def __call__(self, path: Path) -> tuple:
        if path.name.lower().endswith((".dcm", ".ima")):
            if self.dicom is None:
                from fmri_edge.imaging import dicom

                self.dicom = dicom.Reader()
            return self.dicom(path)
        from fmri_edge.imaging.volumes import read_volume as read_nifti

        data, affine = read_nifti(path)
        return data, affine, None


class _Terminated(KeyboardInterrupt):
    pass


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM ends the loop as Ctrl-C does (whole rows stay on disk); main thread only. Yields a
    dict whose ``signal`` says which one came (watchfiles turns any signal into KeyboardInterrupt)."""
    state = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        state["signal"] = "SIGTERM"
        raise _Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, old)


class Stream:
    """One live run: the folder, the atlas on its grid, the schedule, the outputs (see :func:`stream`)."""

    def __init__(
        self,
        folder: Path,
        atlas: Path,
        events: Path,
        tr: float,
        decoder: Model,
        *,
        participant: str | None = None,
        out: Path | None = None,
        force: bool = False,
        align: str = "running",
        stats_from: list[Path] | None = None,
        send: str | None = None,
        volume_timeout: float = DEFAULT_TIMEOUT,
        poll: float | None = None,
        first_volume: int = 1,
        slice_time_ref: float = 0.0,
        trial_types=(),
        include_existing: bool = False,
        on_answer: Callable[[str], None] | None = None,
        on_problem: Callable[[InputError | UsageError], None] | None = None,
        realign: bool = True,
        reference: Path | None = None,
        dummy_scans: int = 0,
        motion_out: Path | None = None,
        fd_threshold: float = FD_THRESHOLD,
        series: str | None = None,
        on_volume: Callable[[dict], None] | None = None,
    ):
        from fmri_edge.imaging.window import TR_RANGE
        from fmri_edge.imaging.atlas import Atlas

        if not TR_RANGE[0] <= tr <= TR_RANGE[1]:
            raise UsageError(
                f"--tr {tr:g}: give the repetition time in seconds ({TR_RANGE[0]:g} … {TR_RANGE[1]:g})"
            )
        if volume_timeout <= 0 or (poll is not None and poll <= 0):
            raise UsageError("--volume-timeout and --poll take a positive number of seconds")
        if not realign and (reference is not None or dummy_scans or motion_out is not None):
            raise UsageError(
                "--no-realign excludes --reference, --dummy-scans and --motion-out (no motion is estimated)"
            )
        if dummy_scans < 0 or not fd_threshold > 0:
            raise UsageError(
                "--dummy-scans takes a count ≥ 0 and --fd-threshold a positive number of mm"
            )
        if realign:
            from fmri_edge.realtime.realign import _scipy

            _scipy()  # no scipy: said before the scan, not at the first volume
        if (decoder.info.subject_normalization or "none") != "none":
            raise UsageError(
                f"{decoder.path}: this model normalizes each participant over all of its trials "
                "outside the graph, which a live run cannot see; stream needs a model with in-graph "
                "alignment or none"
            )
        self.decoder = decoder
        self.folder = Path(folder)
        self.participant = participant or self.folder.resolve().name
        self.window = Window.from_model(decoder.info)
        self.schedule = Schedule(read_events(events, trial_types), self.window, tr, slice_time_ref)
        self.atlas = Atlas(
            atlas, self.window.n_regions, region_names=decoder.info.region_names
        )  # hemispheres checked
        self.alignment = Alignment(decoder, align, stats_from)
        self.feed = VolumeFolder(
            self.folder,
            VolumeReader(),
            volume_timeout,
            first_volume,
            poll,
            include_existing,
            series_choice=series,
        )
        self.on_answer = on_answer or (lambda line: print(line, flush=True))
        self.on_problem = on_problem or (lambda p: None)
        self.on_volume = on_volume or (lambda info: None)
        self.realign, self.dummy_scans, self.fd_threshold = (
            bool(realign),
            int(dummy_scans),
            float(fd_threshold),
        )
        self.realigner = self.moved = self.motion_file = None
        self.held: list = []  # volumes before the reference (dummy scans), until it comes
        self.last_params = None
        self.result = StreamResult(len(self.schedule.trials) + len(self.schedule.skipped))
        self.rows = self.sender = None
        self.notes: list[str] = []
        self.index = self.grid = None
        self.signals = np.full(
            (
                max(t.hi for t in self.schedule.trials) + 1 if self.schedule.trials else 1,
                self.window.n_regions,
            ),
            np.nan,
        )
        self.have = np.zeros(len(self.signals), dtype=bool)
        self.fd = np.full(len(self.signals), np.nan)  # framewise displacement of each volume (mm)
        self.arrived: dict[int, tuple[int, Arrival]] = {}  # index → (arrival order, arrival)
        self.waiting = list(self.schedule.trials)
        try:
            for p in self.feed.start():
                self._problem(p)
            self.sender = Sender(send) if send else None
            self.rows = RowFile(Path(out), force) if out else None
            self.motion_file = MotionFile(Path(motion_out), force) if motion_out else None
            if self.realign and reference is not None:
                data, affine, _ = VolumeReader()(Path(reference))
                self._set_reference(data, affine, Path(reference))
        except BaseException:
            self.close()
            raise
        if volume_timeout <= tr:
            self._problem(
                InputError(
                    self.folder,
                    f"--volume-timeout {volume_timeout:g} s is not longer than the TR "
                    f"({tr:g} s): at scanner pace, every pause between two volumes "
                    "would end the run (fine for a faster replay)",
                    outcome="note",
                )
            )
        if align != "none" and not decoder.aligned:
            self._problem(
                InputError(
                    decoder.path,
                    "this model has no subject alignment: every trial is answered "
                    "as it is" + (" (--stats-from is not used)" if stats_from else ""),
                    outcome="note",
                )
            )
        for p in self.schedule.skipped:
            self._incomplete(p)

    def _problem(self, p) -> None:
        self.result.problems.append(p)
        self.on_problem(p)

    def _incomplete(self, p: InputError) -> None:
        self.result.incomplete.append(p)
        self.on_problem(p)

    def run(self) -> StreamResult:
        """Watch, answer, and return when every trial is answered or declared incomplete (or on
        Ctrl-C / SIGTERM, with whatever was answered kept)."""
        state = {"signal": None}
        try:
            with _sigterm_as_interrupt() as state:
                while self.waiting:
                    self.feed.wait()
                    for item in self.feed.collect():
                        self._take(item)
                        if not self.waiting:
                            break
        except KeyboardInterrupt:
            self.result.interrupted = state["signal"] or "SIGINT"
        finally:
            self.close()
        return self.result

    def close(self) -> None:
        self.feed.close()
        if self.rows is not None:
            self.rows.close()
        if self.motion_file is not None:
            self.motion_file.close()
        if self.sender is not None:
            self.sender.close()

    # ---- one item from the folder ----

    def _take(self, item) -> None:
        if isinstance(item, InputError):
            self._problem(item)
        elif isinstance(item, Missing):
            self._missing(item)
        else:
            self._arrive(item)

    def _set_reference(self, data: np.ndarray, affine: np.ndarray, source: Path) -> None:
        """The reference volume is in (``--reference``, before the first volume; else the run's first
        volume after the dummy scans): the atlas is put on its grid and the realigner made. The one
        place where the atlas meets the participant's reference image before any volume is reduced."""
        from fmri_edge.realtime.realign import MovedRegions, Realigner

        from fmri_edge.imaging.space import check_atlas

        notes: list[str] = []
        # a flipped, shifted or out-of-view atlas is refused here: with --reference, before the scan
        check_atlas(self.atlas, data, affine, source=source, notes=notes)
        labels = self.atlas.labels_on_grid(
            tuple(int(s) for s in data.shape[:3]), affine, notes, source
        )
        for n in notes:
            self._problem(InputError(self.atlas.path, n, outcome="note"))
        try:
            self.realigner = Realigner(data, affine)
            self.moved = MovedRegions(labels, affine, self.window.n_regions)
        except ValueError as e:
            raise InputError(source, f"cannot realign to this reference volume: {e}") from None
        self.reference = source

    def _arrive(self, a: Arrival) -> None:
        data, affine, series = a.decoded
        if self.grid is None:
            if not self.realign:
                from fmri_edge.imaging.space import check_atlas
                from fmri_edge.imaging.volumes import RegionIndex

                check_atlas(
                    self.atlas, data, affine, source=a.path, notes=self.notes
                )  # off the brain: refused

                self.index = RegionIndex.on_grid(
                    self.atlas, data.shape[:3], affine, self.notes, source=a.path
                )
                for n in self.notes:
                    self._problem(InputError(self.atlas.path, n, outcome="note"))
            self.grid = (tuple(data.shape), np.asarray(affine, dtype=np.float64), series)
        shape, first_affine, first_series = self.grid
        problem = None
        if tuple(data.shape) != shape:
            problem = f"shape {tuple(data.shape)} differs from the first volume's {shape}"
        elif not np.allclose(affine, first_affine, atol=1e-4):
            problem = (
                "its affine (position or orientation) differs from the first volume's: the participant's "
                "scan was re-positioned or the file belongs to another run"
            )
        elif series != first_series:
            problem = f"a DICOM of another series ({series}; the stream follows {first_series})"
        if problem is None and self.realign and self.realigner is None:
            if a.index < self.dummy_scans:  # a dummy scan: realigned once the reference has come
                self.held.append(a)
                return
            self._set_reference(data, affine, a.path)
            for h in self.held + [a]:
                self._reduce(h)
            self.held = []
            return
        if problem is not None:
            self._missing(
                Missing(a.index, InputError(a.path, f"{problem}: skipped", outcome="skipped"))
            )
            return
        self._reduce(a)

    def _reduce(self, a: Arrival) -> None:
        """Region means of one volume (moved atlas with realignment), then the answers it completes."""
        data, affine, _ = a.decoded
        timing = self.result.timing
        params = fd = None
        if self.realign:
            from fmri_edge.imaging.motion import framewise_displacement
            from fmri_edge.imaging.motion import spm_params

            t0 = time.perf_counter()
            try:
                m = self.realigner.estimate(data, affine)
            except (ValueError, np.linalg.LinAlgError) as e:
                self._missing(
                    Missing(a.index, InputError(a.path, f"cannot be realigned ({e}): skipped"))
                )
                return
            t1 = time.perf_counter()
            means = self.moved.means(data, affine, m)
            t2 = time.perf_counter()
            timing.realign_ms.append((t1 - t0) * 1e3)
            timing.reduce_ms.append((t2 - t1) * 1e3)
            params = spm_params(m)
            fd = framewise_displacement(params, self.last_params)
            self.last_params = params
        else:
            t0 = time.perf_counter()
            means = self.index.means(data)
            timing.reduce_ms.append((time.perf_counter() - t0) * 1e3)
        timing.read_ms.append(a.read_ms)
        timing.wait_ms.append(max(0.0, (a.seen_ns - a.complete_ns) / 1e6))
        if not np.isfinite(means).all():
            self._missing(
                Missing(
                    a.index,
                    InputError(
                        a.path,
                        "region means hold NaN or Inf (NaN voxels inside the atlas?): skipped",
                    ),
                )
            )
            return
        if a.index < len(self.signals):
            self.signals[a.index] = means
            self.have[a.index] = True
            if fd is not None:
                self.fd[a.index] = fd
        a.decoded = None  # the volume itself is done with: memory holds region means only
        self.arrived[a.index] = (len(self.arrived), a)
        self._answer_ready()
        if (
            params is not None and self.motion_file is not None
        ):  # after the answers: no latency added
            if (
                not self.motion_file.row(a.index, a.path.name, params, fd)
                and self.result.motion_error is None
            ):
                self.result.motion_error = self.motion_file.error
                self._problem(self.motion_file.error)
        self.on_volume(
            {
                "volume": a.index,
                "file": a.path.name,
                "params": params,
                "fd": fd,
                "flag": fd is not None and fd > self.fd_threshold,
                "realign_ms": timing.realign_ms[-1] if params is not None else None,
                "read_ms": a.read_ms,
            }
        )

    def _missing(self, m: Missing) -> None:
        if m.problem is not None:
            self._problem(m.problem)
        keep = []
        for t in self.waiting:
            if m.end and t.hi >= m.index:
                last = (m.index - 1 + self.schedule.ref) * self.schedule.tr
                self._incomplete(
                    InputError(
                        self.schedule.events.path,
                        f"event row {t.row} (onset {t.onset:g} s, "
                        f"{t.trial_type}): its {self.schedule.window_text(t)} runs past the end "
                        f"of the scan (last volume at {last:g} s; nothing more came within "
                        f"--volume-timeout {self.feed.timeout:g} s); not answered",
                        outcome="skipped",
                    )
                )
            elif not m.end and t.lo <= m.index <= t.hi:
                self._incomplete(
                    InputError(
                        self.schedule.events.path,
                        f"event row {t.row} (onset {t.onset:g} s, "
                        f"{t.trial_type}): its {self.schedule.window_text(t)} needs volume "
                        f"index {m.index}, which is missing or damaged; not answered",
                        outcome="skipped",
                    )
                )
            else:
                keep.append(t)
        self.waiting = keep

    def _answer_ready(self) -> None:
        keep = []
        for t in self.waiting:
            if self.have[t.lo : t.hi + 1].all():
                self._answer(t)
            else:
                keep.append(t)
        self.waiting = keep

    def _answer(self, t: Trial) -> None:
        t0 = time.perf_counter()
        x = self.schedule.cut(t, self.signals)
        subject, aligned = self.alignment(x)
        last = max((self.arrived[k] for k in range(t.lo, t.hi + 1)), key=lambda v: v[0])[1]
        src = io.Source(self.participant, self.folder)
        for b in answer(self.decoder, src, np.array([t.row]), x, subject):
            if not isinstance(b, Batch):
                self._incomplete(b)
                continue
            a = Answer(
                t.row,
                t.onset,
                t.trial_type,
                int(b.valence_class[0]),
                int(b.valence_level[0]),
                [float(p) for p in b.class_probs[0]],
                last.index,
                last.path.name,
                0.0,
                aligned,
            )
            if self.realign:
                a.fd_max = float(np.nanmax(self.fd[t.lo : t.hi + 1]))
                a.motion_flag = bool(a.fd_max > self.fd_threshold)
                self.result.flagged += a.motion_flag
            a.latency_ms = (time.time_ns() - last.complete_ns) / 1e6
            line = a.as_json(self.participant)
            self.on_answer(line)
            if self.sender is not None and not self.sender.send(line):  # the stimulus program first
                if self.result.send_error is None:
                    self.result.send_error = self.sender.error
                    self._problem(self.sender.error)
            if self.rows is not None and not self.rows.row(
                self.participant, a
            ):  # then the row, fsync'ed (~3 ms)
                if self.result.out_error is None:
                    self.result.out_error = self.rows.error
                    self._problem(self.rows.error)
            self.result.answered += 1
            self.result.timing.latency_ms.append(a.latency_ms)
            self.result.timing.answer_ms.append((time.perf_counter() - t0) * 1e3)


def stream(folder, atlas, events, tr, decoder: Model, **options) -> StreamResult:
    """Answer every trial of ``events`` from the volumes arriving in ``folder``; see :class:`Stream`."""
    return Stream(Path(folder), Path(atlas), Path(events), tr, decoder, **options).run()
