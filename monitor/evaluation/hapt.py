"""The UCI HAPT raw recordings as files ``telemon evaluate csv`` reads: one CSV per experiment.

HAPT keeps each experiment's accelerometer and gyroscope in two files (``acc_expNN_userMM.txt``,
``gyro_expNN_userMM.txt``: three space-separated columns, 50 Hz, no header) and the labels of all
experiments in one more (``labels.txt``: ``experiment user activity start_sample end_sample``,
samples counted from 1, both ends included). :func:`write_experiment` joins an experiment's two
files row by row into ``expNN_userMM.csv`` with the columns ``acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,
activity``. A row inside a labelled span gets its activity; a row outside every span (HAPT leaves
such rows unlabelled: turns, pauses, the start and end of the recording) keeps the activity of
the span before it (before the first span: the first span's), so that ``--label-kind change``
finds exactly the starts of the spans whose activity differs from the previous span's.

``python -m monitor.evaluation.hapt RAWDATA OUT`` writes every experiment of RAWDATA under OUT
(``make evaluate`` runs it into ``evaluation/hapt/``; the data itself stays where it is).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from monitor.errors import LabelledInputError as InputError

COLUMNS: Final = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z", "activity")
_ACC: Final = re.compile(r"acc_exp(\d+)_user(\d+)\.txt")


@dataclass(frozen=True)
class Span:
    """One labelled span of ``labels.txt``: rows ``start``..``end`` (1-based, inclusive)."""

    experiment: int
    user: int
    activity: int
    start: int
    end: int


def read_spans(path: Path) -> list[Span]:
    """The spans of a labels file; a malformed line is an error naming the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: {exc}") from exc
    spans = []
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        fields = text.split()
        try:
            numbers = [int(x) for x in fields]
        except ValueError as exc:
            raise InputError(f"{path}, line {line}: {text!r} is not 5 integers ({exc})") from exc
        if len(numbers) != 5 or numbers[3] > numbers[4] or numbers[3] < 1:
            raise InputError(
                f"{path}, line {line}: {text!r}: experiment user activity start end, start <= end"
            )
        spans.append(Span(*numbers))
    return spans


def activity_column(spans: Sequence[Span], rows: int) -> NDArray[np.int64]:
    """Each row's activity: its span's, else the span before it's (the first span's before that).

    >>> activity_column([Span(1, 1, 5, 2, 3), Span(1, 1, 7, 6, 6)], 8).tolist()
    [5, 5, 5, 5, 5, 7, 7, 7]
    """
    ordered = sorted(spans, key=lambda s: s.start)
    out = np.full(rows, ordered[0].activity if ordered else 0, np.int64)
    for s in ordered:
        out[s.start - 1 :] = s.activity
    return out


def _read_axes(path: Path) -> NDArray[np.float64]:
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: {exc}") from exc
    if values.shape[1] != 3:
        raise InputError(f"{path}: {values.shape[1]} columns, expected 3 (x y z)")
    return values


def write_experiment(acc: Path, spans: Sequence[Span], out: Path) -> Path:
    """Join ``acc`` with its gyroscope file and the activity of ``spans`` into one CSV under ``out``."""
    gyro = acc.with_name(acc.name.replace("acc_", "gyro_", 1))
    a, g = _read_axes(acc), _read_axes(gyro)
    if len(a) != len(g):
        raise InputError(f"{acc} has {len(a)} rows, {gyro} {len(g)}")
    activity = activity_column(spans, len(a))
    path = out / f"{acc.stem.removeprefix('acc_')}.csv"
    out.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.write(",".join(COLUMNS) + "\n")
        for row, act in zip(np.hstack([a, g]).tolist(), activity.tolist(), strict=True):
            f.write(",".join(repr(x) for x in row) + f",{act}\n")
    return path


def write_all(raw: Path, out: Path) -> list[Path]:
    """Every experiment of a HAPT ``RawData`` folder that has labels, as CSVs under ``out``."""
    spans = read_spans(raw / "labels.txt")
    written = []
    for acc in sorted(raw.glob("acc_exp*_user*.txt")):
        match = _ACC.fullmatch(acc.name)
        if match is None:
            continue
        exp, user = int(match[1]), int(match[2])
        mine = [s for s in spans if (s.experiment, s.user) == (exp, user)]
        if mine:
            written.append(write_experiment(acc, mine, out))
    if not written:
        raise InputError(f"{raw}: no labelled acc_expNN_userMM.txt files")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m monitor.evaluation.hapt RAWDATA OUT", file=sys.stderr)
        return 2
    try:
        written = write_all(Path(args[0]), Path(args[1]))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(written)} experiments written to {args[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
