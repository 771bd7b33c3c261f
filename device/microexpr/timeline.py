"""Per-frame Action Units of a video, image folder or image: the library
behind ``microexpr timeline``.

Rows follow OpenFace's FeatureExtraction output in spirit, so existing
tooling reads them: ``frame, timestamp, success, confidence, pose_Rx,
pose_Ry, pose_Rz``, then ``AUxx_r`` intensities and ``AUxx_c`` presence.
Differences, on purpose:

* intensities are the estimator's 0..1 times ``INTENSITY_SCALE`` (5), the
  0..5 range OpenFace uses, where 1 ≈ FACS trace (A) and 5 ≈ maximum (E);
* ``AUxx_c`` is 1 when the intensity is at least ``PRESENCE_THRESHOLD``
  (1.0 on the 0..5 scale, the trace level) — a threshold, not a separate
  classifier as in OpenFace;
* pose angles are in degrees (OpenFace writes radians), convention in
  ``microexpr.tracking.mediapipe``;
* a frame without a face has ``success = 0`` and empty pose/AU fields
  (OpenFace writes zeros, which read as a measured neutral face).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from microexpr.aus import AU_COLUMNS, SIDED_AUS, AUEstimator, AUFrame
from microexpr.capture import Frame, open_source
from microexpr.errors import DataError, ExitCode, MicroexprError, NoFaceError
from microexpr.facs import AU
from microexpr.tracking import FaceTracker, create_tracker

log = logging.getLogger(__name__)

#: Estimator 0..1 → OpenFace's 0..5 intensity range.
INTENSITY_SCALE = 5.0
#: ``AUxx_c`` = 1 from this intensity on (0..5 scale): FACS trace level A.
PRESENCE_THRESHOLD = 1.0

POSE_COLUMNS = ("pose_Rx", "pose_Ry", "pose_Rz")


class OutputFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


def au_name(au: AU) -> str:
    """``AU01``: OpenFace's zero-padded spelling, used in column names."""
    return f"AU{au.value:02d}"


def scaled(value: float) -> float:
    """0..1 estimator value on the 0..5 scale."""
    return value * INTENSITY_SCALE


def present(value: float) -> bool:
    """Presence call from a 0..1 estimator value, made on the value as
    written (two decimals), so ``AUxx_c`` always agrees with ``AUxx_r``."""
    return round(scaled(value), 2) >= PRESENCE_THRESHOLD


def header(*, face_id: bool = False, sides: bool = False) -> list[str]:
    """CSV column names, in order."""
    cols = ["frame"] + (["face_id"] if face_id else []) + ["timestamp", "success", "confidence", *POSE_COLUMNS]
    cols += [f"{au_name(au)}_r" for au in AU_COLUMNS]
    cols += [f"{au_name(au)}_c" for au in AU_COLUMNS]
    if sides:
        for au in AU_COLUMNS:
            if au in SIDED_AUS:
                cols += [f"{au_name(au)}_left", f"{au_name(au)}_right"]
    return cols


def csv_fields(frame: AUFrame, *, face_id: bool = False, sides: bool = False) -> list[str]:
    """One CSV row (strings, matching ``header``)."""
    row = [str(frame.frame_index)] + ([str(frame.subject_id)] if face_id else [])
    row += [f"{frame.timestamp:.3f}", "1" if frame.face_found else "0", f"{frame.confidence:.2f}"]
    n_sided = sum(1 for au in AU_COLUMNS if au in SIDED_AUS)
    if not frame.face_found or frame.pose is None:
        blanks = len(POSE_COLUMNS) + 2 * len(AU_COLUMNS) + (2 * n_sided if sides else 0)
        return row + [""] * blanks
    pose = frame.pose
    row += [f"{pose.pitch:.2f}", f"{pose.yaw:.2f}", f"{pose.roll:.2f}"]
    row += [f"{scaled(frame.intensity.get(au, 0.0)):.2f}" for au in AU_COLUMNS]
    row += ["1" if present(frame.intensity.get(au, 0.0)) else "0" for au in AU_COLUMNS]
    if sides:
        for au in AU_COLUMNS:
            if au in SIDED_AUS:
                row += [f"{scaled(frame.left.get(au, 0.0)):.2f}", f"{scaled(frame.right.get(au, 0.0)):.2f}"]
    return row


def json_record(frame: AUFrame) -> dict[str, Any]:
    """One JSON-lines record: the CSV's fields plus per-side intensities."""
    record: dict[str, Any] = {
        "frame": frame.frame_index,
        "face_id": frame.subject_id,
        "timestamp": round(frame.timestamp, 6),
        "success": frame.face_found,
        "confidence": round(frame.confidence, 4),
    }
    if not frame.face_found or frame.pose is None:
        record.update({name: None for name in POSE_COLUMNS})
        record.update({"au_r": None, "au_c": None, "au_left": None, "au_right": None})
        return record
    record.update(
        {"pose_Rx": round(frame.pose.pitch, 3), "pose_Ry": round(frame.pose.yaw, 3), "pose_Rz": round(frame.pose.roll, 3)}
    )
    record["au_r"] = {au_name(au): round(scaled(frame.intensity.get(au, 0.0)), 2) for au in AU_COLUMNS}
    record["au_c"] = {au_name(au): int(present(frame.intensity.get(au, 0.0))) for au in AU_COLUMNS}
    record["au_left"] = {au_name(au): round(scaled(v), 2) for au, v in frame.left.items()}
    record["au_right"] = {au_name(au): round(scaled(v), 2) for au, v in frame.right.items()}
    return record


class TimelineWriter:
    """Streams AU frames to a text stream as CSV or JSON lines."""

    def __init__(self, out: TextIO, fmt: OutputFormat, *, face_id: bool = False, sides: bool = False) -> None:
        self._out = out
        self._fmt = fmt
        self._face_id = face_id
        self._sides = sides
        self._csv = csv.writer(out, lineterminator="\n") if fmt is OutputFormat.CSV else None
        if self._csv is not None:
            self._csv.writerow(header(face_id=face_id, sides=sides))

    def write(self, frame: AUFrame) -> None:
        if self._csv is not None:
            self._csv.writerow(csv_fields(frame, face_id=self._face_id, sides=self._sides))
        else:
            self._out.write(json.dumps(record_for_output(frame, self._face_id), separators=(",", ":")) + "\n")


def record_for_output(frame: AUFrame, face_id: bool) -> dict[str, Any]:
    record = json_record(frame)
    if not face_id:
        record.pop("face_id")
    return record


def iter_au_frames(
    frames: Iterable[Frame], tracker: FaceTracker, estimator: AUEstimator, *, all_faces: bool = False
) -> Iterator[AUFrame]:
    """Track and estimate every frame. With ``all_faces`` one AUFrame per
    face (a single no-face AUFrame when there is none), else the primary face."""
    for frame in frames:
        obs = tracker.process(frame)
        if all_faces:
            yield from estimator.estimate_all(obs)
        else:
            yield estimator.estimate(obs)


@dataclass(frozen=True, slots=True)
class TimelineSummary:
    """What a timeline run saw."""

    frames: int
    frames_with_face: int
    fps: float


# ---------------------------------------------------------------------------
# The plot

#: Panels of the plot: face regions, top to bottom.
PLOT_GROUPS: tuple[tuple[str, tuple[AU, ...]], ...] = (
    ("brows and eyes", (AU(1), AU(2), AU(4), AU(5), AU(6), AU(7), AU(45))),
    ("nose and upper lip", (AU(9), AU(10))),
    ("lip corners", (AU(12), AU(14), AU(15), AU(20))),
    ("lips and jaw", (AU(16), AU(17), AU(23), AU(24), AU(25), AU(26), AU(28), AU(29), AU(30))),
)

PLOT_SUFFIXES = frozenset({".png", ".svg", ".pdf"})


def check_plot_path(path: Path) -> None:
    """Refuse a plot path we cannot write before any frame is processed."""
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise MicroexprError(
            f"--plot {path}: unsupported file type (use {', '.join(sorted(PLOT_SUFFIXES))})", exit_code=ExitCode.USAGE
        )
    if not path.parent.is_dir():
        raise MicroexprError(f"--plot {path}: folder {path.parent} does not exist", exit_code=ExitCode.IO_ERROR)


def plot_timeline(frames: Sequence[AUFrame], path: Path, *, title: str) -> None:
    """AU intensity curves over time, one panel per face region.

    Draws the primary subject (``subject_id`` 0, else the lowest seen). Time
    runs along x in seconds; frames without a face are shaded grey; the
    dashed line is the presence threshold. Uses the Agg canvas directly, so
    no display and no pyplot global state are involved.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    subject = min((f.subject_id for f in frames if f.face_found), default=0)
    stamps = {f.frame_index: f.timestamp for f in frames}
    chosen = {f.frame_index: f for f in frames if f.face_found and f.subject_id == subject}
    series = [chosen.get(i) or AUFrame.no_face(i, stamps[i]) for i in sorted(stamps)]
    times = [f.timestamp for f in series]

    fig = Figure(figsize=(11, 2.3 * len(PLOT_GROUPS) + 0.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(PLOT_GROUPS), 1, sharex=True)
    styles = ("-", "--", "-.", ":")
    dt = _frame_step(times)
    for ax, (label, aus) in zip(axes, PLOT_GROUPS):
        for i, au in enumerate(aus):
            values = [scaled(f.intensity[au]) if f.face_found and au in f.intensity else math.nan for f in series]
            ax.plot(times, values, label=f"{au.code} {au.facs_name.lower()}", linewidth=1.6,
                    linestyle=styles[(i // 10) % len(styles)], color=f"C{i % 10}")
        for f in series:
            if not f.face_found:
                ax.axvspan(f.timestamp - dt / 2, f.timestamp + dt / 2, color="0.85", linewidth=0)
        ax.axhline(PRESENCE_THRESHOLD, color="0.4", linestyle="--", linewidth=0.8)
        ax.set_ylim(-0.1, INTENSITY_SCALE + 0.1)
        ax.set_ylabel("intensity (0-5)")
        ax.set_title(label, loc="left", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes[-1].set_xlabel("time (s)")
    if times:
        axes[-1].set_xlim(times[0] - dt / 2, times[-1] + dt / 2)
    fig.suptitle(title, fontsize=11)
    try:
        fig.savefig(path)
    except OSError as exc:
        raise MicroexprError(f"--plot {path}: cannot write: {exc.strerror}", exit_code=ExitCode.IO_ERROR) from None


def _frame_step(times: Sequence[float]) -> float:
    steps = [b - a for a, b in zip(times, times[1:]) if b > a]
    return min(steps) if steps else 1 / 30


# ---------------------------------------------------------------------------
# The whole run


def run_timeline(
    media: str | Path,
    out: TextIO,
    *,
    fmt: OutputFormat = OutputFormat.CSV,
    model_path: Path | None = None,
    num_faces: int = 1,
    backend: str = "mediapipe",
    fps: float | None = None,
    sides: bool = False,
    plot_path: Path | None = None,
    progress: bool = False,
) -> TimelineSummary:
    """Write the per-frame AU timeline of ``media`` to ``out``.

    Raises SourceError for missing (66) or corrupt (65) media, ModelError
    for a missing/unverified model, NoFaceError (3) when no frame holds a
    face (the rows are written first: they are the evidence).
    """
    if plot_path is not None:
        check_plot_path(plot_path)
    many = num_faces > 1
    collected: list[AUFrame] = []
    frames = 0
    last_index: int | None = None
    with_face: set[int] = set()
    with open_source(media, fps=fps) as source:
        if source.is_live:
            raise MicroexprError(
                f"{media}: a camera has no end; timeline reads files (see `microexpr run`)", exit_code=ExitCode.USAGE
            )
        with create_tracker(backend, model_path=model_path, num_faces=num_faces) as tracker:
            writer = TimelineWriter(out, fmt, face_id=many, sides=sides)
            bar = _progress_bar(source.frame_count, media) if progress else None
            try:
                for au_frame in iter_au_frames(source, tracker, AUEstimator(), all_faces=many):
                    writer.write(au_frame)
                    if au_frame.frame_index != last_index:  # several rows per frame with --num-faces
                        last_index = au_frame.frame_index
                        frames += 1
                        if bar is not None:
                            bar.update(1)
                    if au_frame.face_found:
                        with_face.add(au_frame.frame_index)
                    if plot_path is not None:
                        collected.append(au_frame)
            finally:
                if bar is not None:
                    bar.close()
        fps_used = source.fps
    if frames == 0:
        raise DataError(f"{media}: no frames could be read")
    if not with_face:
        raise NoFaceError(f"{media}: no face found in any of its {frames} frame(s)")
    if plot_path is not None:
        plot_timeline(collected, plot_path, title=f"{Path(str(media)).name}: Action Units per frame")
    log.debug("timeline of %s: %d frames, %d with a face", media, frames, len(with_face))
    return TimelineSummary(frames=frames, frames_with_face=len(with_face), fps=fps_used)


def _progress_bar(total: int | None, media: str | Path) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=Path(str(media)).name, file=sys.stderr, leave=False)
