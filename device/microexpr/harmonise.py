"""Label harmonisation across coding tables: declared once, printed in reports.

Coding tables name the same emotions differently (``sad``, ``happy``,
``Other``) and do not share a label set: CASME II has ``repression`` and
``others`` but no ``anger``/``contempt``; CAS(ME)³ part A and MMEW as
distributed have no ``others``; SAMM has ``contempt`` and ``anger`` but no
``repression``. Scoring dataset B with knowledge fitted on dataset A needs
one rule for every label A uses that B cannot produce. Those rules live
here, as data, so that ``microexpr eval`` can print them beside the scores
(``describe()``) and no other module decides them on its own.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from microexpr.facs import Emotion
from microexpr.labels import _EMOTION_ALIASES, LabelRow, LabelTable

#: Where a training row's label is not a label of the scored table: the
#: label it becomes there, if the scored table has it, and why. Labels not
#: listed (and listed ones whose target is missing too) leave the row out of
#: that fit; it is counted, never silently dropped.
REPLACEMENTS: dict[Emotion, tuple[Emotion, str]] = {
    Emotion.REPRESSION: (Emotion.OTHERS, "CASME II's own class (suppression, mostly a lone AU15/AU17); a table "
                                         "without it would file such an episode under 'others'"),
    Emotion.ANGER: (Emotion.OTHERS, "a table without an anger label files anger under 'others' (CASME II codes "
                                    "the lone lowered brow, objective class III 'anger', as others 56 times)"),
    Emotion.CONTEMPT: (Emotion.OTHERS, "a table without a contempt label files the one-sided display under "
                                       "'others'"),
}
#: Why a row is left out rather than mapped.
LEFT_OUT = {
    Emotion.OTHERS: "a table without 'others' (CAS(ME)³ part A, MMEW as distributed) says nothing about which "
                    "emotion a non-emotional episode would be: 'others' rows are left out of fits for it, and "
                    "'others' is not a label it can be scored on",
}
#: The known tables and the labels they cannot produce (for the report; the
#: scoring itself reads each table's labels from the file).
KNOWN_GAPS: tuple[tuple[str, str], ...] = (
    ("CASME II (Yan et al. 2014)", "no anger, contempt: coders filed them under 'others'"),
    ("CAS(ME)³ part A (Li et al. 2023)", "no others, repression, contempt ('sad', 'happy' spelt so)"),
    ("MMEW as distributed (Ben et al. 2022)", "no others (removed from the file), repression, contempt"),
    ("SAMM (Davison et al. 2018)", "no repression ('Other' spelt so)"),
)


@dataclass(frozen=True, slots=True)
class Harmonised:
    """Training rows in the scored table's labels, with what was changed."""

    rows: tuple[LabelRow, ...]
    mapped: dict[str, int]  #: "anger->others" → rows
    left_out: dict[str, int]  #: label → rows left out


def spellings() -> dict[str, str]:
    """Every accepted spelling that differs from the label's own name."""
    return {k: e.value for k, e in sorted(_EMOTION_ALIASES.items()) if k != e.value}


def harmonise(rows: Iterable[LabelRow], target: Sequence[Emotion]) -> Harmonised:
    """Map rows labelled for one table into the label set ``target`` of another."""
    allowed = set(target)
    out: list[LabelRow] = []
    mapped: Counter[str] = Counter()
    left_out: Counter[str] = Counter()
    for row in rows:
        if row.emotion in allowed:
            out.append(row)
            continue
        replacement = REPLACEMENTS.get(row.emotion)
        if replacement is not None and replacement[0] in allowed:
            out.append(replace(row, emotion=replacement[0]))
            mapped[f"{row.emotion.value}->{replacement[0].value}"] += 1
        else:
            left_out[row.emotion.value] += 1
    return Harmonised(tuple(out), dict(sorted(mapped.items())), dict(sorted(left_out.items())))


def table_fingerprint(table: LabelTable) -> str:
    """sha256 of the usable rows (subject, file, AU string, label), not of the file.

    The CASME II ``.xlsx`` and its CSV give the same rows and so the same
    fingerprint: a pooled prototype set names its datasets by it, and
    ``microexpr eval`` leaves out the one it is scoring, whatever file form
    it was read from. Rows whose AU string this version cannot read count
    too (by their text), so that a reader that learns a new notation does
    not change the fingerprint.
    """
    digest = hashlib.sha256()
    for row in sorted(table.rows, key=lambda r: (r.subject, r.filename, r.aus_text, r.emotion.value)):
        digest.update(f"{row.subject}\t{row.filename}\t{row.aus_text}\t{row.emotion.value}\n".encode())
    return digest.hexdigest()


def describe() -> list[str]:
    """The harmonisation as report lines (Markdown bullets)."""
    lines = ["- spellings read as labels: " + ", ".join(f"`{k}` → {v}" for k, v in spellings().items())]
    for emotion, (target, why) in REPLACEMENTS.items():
        lines.append(f"- `{emotion.value}` where the scored table has no such label → `{target.value}` if it has "
                     f"that, else left out ({why})")
    for emotion, why in LEFT_OUT.items():
        lines.append(f"- `{emotion.value}` where the scored table has no such label → left out ({why})")
    lines.append("- any other label the scored table does not have → left out of fits for it (counted)")
    lines.append("- predictions are restricted to the scored table's labels: a classifier cannot be credited or "
                 "blamed for a label its coders could not give")
    lines += [f"- {name}: {gap}" for name, gap in KNOWN_GAPS]
    return lines


def describe_json() -> dict[str, object]:
    return {
        "spellings": spellings(),
        "replacements": {e.value: {"to": t.value, "why": why} for e, (t, why) in REPLACEMENTS.items()},
        "left_out": {e.value: why for e, why in LEFT_OUT.items()},
        "known_gaps": dict(KNOWN_GAPS),
    }
