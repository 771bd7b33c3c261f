"""Coded micro-expression datasets: the FACS AU notation and the label files.

Two jobs, kept together because they fail together (a label file is only as
good as its AU strings):

* ``parse_aus`` reads one "Action Units" cell in the notations the field uses
  (CASME II, SAMM, CAS(ME)², MMEW) into ``ParsedAUs``;
* ``read_labels`` reads a whole coding table (the CASME II ``.xlsx`` as
  distributed, its CSV form, or the generic CSV documented in
  ``docs/evaluation.md``) into ``LabelTable`` rows, collecting every problem
  with its row number instead of dropping rows silently.

Notation decisions (see ``docs/evaluation.md`` for the reasoning):

* ``+`` separates units (``,`` and ``;`` are read the same way); whitespace
  and case are ignored; a stray ``AU`` before a unit (``AU4``, ``AUR2``) is
  dropped.
* ``L``/``R`` prefix (or suffix, ``12R``): one-sided, the subject's left/right.
  ``B`` prefix: bilateral, i.e. both sides (the default, written out).
* ``A`` prefix: asymmetric, i.e. on both sides but clearly stronger on one
  (FACS scores unilateral actions L/R and notes asymmetry separately). The
  classifier sees it as the same AU on both sides with unequal intensities,
  which is how a live episode presents an asymmetric movement. ``A/L12``
  (``AL12``, ``L/A12``: modifiers in any order, ``/`` optional) names the
  stronger side.
* ``T`` prefix: a trace of the action (the weakest FACS level, as letter A).
* Intensity letters ``A``–``E`` after the number map to 0.2 … 1.0; a unit
  without a letter is 1.0 (present, intensity not coded). A range ``10A/B``
  (the coder placed it between two levels) is the mean of the two.
* ``ref(7B)``: an action the coder recorded for reference but not as part of
  the expression; kept, flagged, and passed on at half intensity.
* ``(R6 or R12)`` (or ``R6 or R12`` for the whole cell): the coder could not
  decide; every reading is kept and the classifier scores each
  (``ParsedAUs.readings``).
* Valid FACS codes that are not facial muscle actions (``NON_AU_CODES``:
  speech 50, swallow/shrug/nod 80–85, gross behaviour 91–99 …; eye
  positions 61–64, ``EYE_MOVEMENT_CODES``) and free words (``soft focus``,
  ``blink``) are noted and left out of scoring; the reader lists them per
  row. A cell holding nothing else is a per-row warning and the row is left
  out: one such row never fails a file.
* An empty cell, ``?``, ``/`` or anything else unreadable (``4 7``, ``12F``,
  ``x12``) is an error: guessing what a malformed unit meant would change the
  AU configuration that is scored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from microexpr.errors import DataError, ExitCode
from microexpr.facs import AU, AUActivation, Emotion, Side

log = logging.getLogger(__name__)

#: FACS intensity letters → the 0..1 scale used everywhere (A trace … E maximum).
INTENSITY_LETTERS: dict[str, float] = {"A": 0.2, "B": 0.4, "C": 0.6, "D": 0.8, "E": 1.0}
#: Intensity given to a ``T`` (trace) unit without a letter.
TRACE_INTENSITY = INTENSITY_LETTERS["A"]
#: ``ref(..)`` units reach the classifier at this fraction of their intensity.
REFERENCE_FACTOR = 0.5
#: The weaker side of an ``A`` (asymmetric) unit, as a fraction of the stronger.
ASYMMETRIC_WEAK_SIDE = 0.5
#: At most this many readings are built from ``or`` alternatives.
MAX_READINGS = 16
#: Valid FACS codes that are not facial Action Units of ``facs.AU``: neutral
#: (0), speech (50), walleye/cross-eye (65, 66), eyes positioned (69),
#: visibility (70-74), swallow, chewing, shrug, head shake/nod (80-85) and the
#: gross behaviour codes (91-99). They are accepted and left out of scoring.
NON_AU_CODES = frozenset({0, 50, 65, 66, 69, 70, 71, 72, 73, 74, 80, 81, 82, 84, 85, *range(91, 100)})
#: FACS 2002 eye position codes (61 eyes left, 62 right, 63 up, 64 down):
#: valid codes, but where the eyes look, not a facial muscle action. A coding
#: table lists them beside the AUs; they are noted and left out of scoring
#: like ``NON_AU_CODES`` (``facs.AU`` keeps them for the live gaze features).
EYE_MOVEMENT_CODES = frozenset({61, 62, 63, 64})


class AUParseError(DataError):
    """An AU string that cannot be read; the message quotes it and the position."""


# ---------------------------------------------------------------------------
# AU notation
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodedAU:
    """One coded unit as written in a label file, before it becomes activations.

    ``side`` is where the unit acts; for an ``asymmetric`` unit (both sides)
    it names the stronger side when the coder wrote one (``A/L12``), else
    ``BOTH``. ``letter`` is the intensity as written (``B``, or a range
    ``A/B``); ``intensity`` is its value on the 0..1 scale.
    """

    au: AU
    side: Side = Side.BOTH
    intensity: float = 1.0
    letter: str | None = None
    asymmetric: bool = False
    trace: bool = False
    reference: bool = False

    def activations(self) -> tuple[AUActivation, ...]:
        """The classifier's view of this unit (see the module notes)."""
        level = self.intensity * (REFERENCE_FACTOR if self.reference else 1.0)
        if self.asymmetric:
            # Which side is stronger matters to no stage, only that the two
            # sides differ; when the coder named it, it is kept.
            strong = self.side if self.side is not Side.BOTH else Side.LEFT
            weak = Side.RIGHT if strong is Side.LEFT else Side.LEFT
            return (
                AUActivation(self.au, strong, level),
                AUActivation(self.au, weak, level * ASYMMETRIC_WEAK_SIDE),
            )
        return (AUActivation(self.au, self.side, level),)

    def __str__(self) -> str:
        side = "" if self.side is Side.BOTH else self.side.value
        prefix = ("A/" + side if side else "A") if self.asymmetric else side
        if self.trace:
            prefix = "T" + prefix
        text = f"{prefix}{self.au.value}{self.letter or ''}"
        return f"ref({text})" if self.reference else text


@dataclass(frozen=True, slots=True)
class ParsedAUs:
    """A parsed "Action Units" cell: definite units plus ``or`` groups.

    What the cell holds besides facial AUs is kept (``ignored``,
    ``descriptors``) so that the reader can say, row by row, what it left out.
    """

    text: str
    units: tuple[CodedAU, ...]
    #: Each group lists its options; each option is one or more units.
    alternatives: tuple[tuple[tuple[CodedAU, ...], ...], ...] = ()
    #: FACS codes that are not facial AUs (``NON_AU_CODES``, ``EYE_MOVEMENT_CODES``), left out of scoring.
    ignored: tuple[int, ...] = ()
    #: Words that are not FACS codes (``soft focus``, ``blink``), left out of scoring.
    descriptors: tuple[str, ...] = ()

    def readings(self, limit: int = MAX_READINGS) -> tuple[tuple[AUActivation, ...], ...]:
        """Every way to read the cell: definite units plus one option per group."""
        base = [a for unit in self.units for a in unit.activations()]
        if not self.alternatives:
            return (tuple(base),)
        out: list[tuple[AUActivation, ...]] = []
        for choice in itertools.product(*self.alternatives):
            extra = [a for option in choice for unit in option for a in unit.activations()]
            out.append(tuple(base + extra))
            if len(out) >= limit:
                break
        return tuple(out)

    @property
    def ambiguous(self) -> bool:
        return bool(self.alternatives)

    @property
    def has_aus(self) -> bool:
        """False when the cell names no facial AU at all (only descriptors or non-AU codes)."""
        return any(True for _ in self.all_units())

    def all_units(self) -> Iterator[CodedAU]:
        yield from self.units
        for group in self.alternatives:
            for option in group:
                yield from option

    def left_out(self) -> str:
        """What the cell holds that is not scored, in words ("" when nothing)."""
        parts: list[str] = []
        eye = [c for c in self.ignored if c in EYE_MOVEMENT_CODES]
        other = [c for c in self.ignored if c not in EYE_MOVEMENT_CODES]
        if other:
            parts.append(f"FACS code(s) {', '.join(map(str, other))} (not facial AUs)")
        if eye:
            parts.append(f"eye-movement code(s) {', '.join(map(str, eye))} (FACS eye position, not a facial muscle)")
        if self.descriptors:
            parts.append(f"descriptor(s) {', '.join(repr(d) for d in self.descriptors)} (not FACS codes)")
        return "; ".join(parts)

    def __str__(self) -> str:
        parts = [str(u) for u in self.units]
        for group in self.alternatives:
            # An option of only descriptors reads as nothing scored ("12 or blink").
            parts.append("(" + " or ".join("+".join(str(u) for u in opt) or "nothing" for opt in group) + ")")
        return "+".join(parts)


#: One token of an "Action Units" cell. A unit is an optional ``AU``, up to
#: three modifiers (``L R B A T``, optionally split by ``/``: ``A/L``), the
#: number, an intensity letter or range (``B``, ``A/B``) and an optional side
#: suffix. A word is a run of letters not glued to a number (``x12`` stays an
#: error) or to a parenthesis.
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<plus>[+,;])
      | (?P<open>\()
      | (?P<close>\))
      | (?P<ref>ref\s*\()
      | (?P<or>or)(?![^\W_])
      | (?P<unit>
            (?:au\s*)?
            (?P<prefix>[lrabt](?:/?[lrabt]){0,2})?
            (?:au\s*)?
            (?P<number>\d{1,2})
            (?:(?P<letter>[a-e])(?:\s*/\s*(?P<upper>[a-e]))?)?
            (?P<suffix>[lr])?
        )(?![^\W_])
      | (?P<word>[^\W\d_]+(?:['’-][^\W\d_]+)*)(?![\d(])
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_TOKEN_KINDS = ("plus", "open", "close", "ref", "or", "unit", "word")


def _tokens(text: str) -> list[tuple[str, re.Match[str], int]]:
    out: list[tuple[str, re.Match[str], int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            bad = text[pos:].strip()[:12]
            raise AUParseError(f"cannot read AU string {text!r}: unexpected {bad!r} at character {pos + 1}")
        kind = next(k for k in _TOKEN_KINDS if match.group(k) is not None)
        out.append((kind, match, pos))
        pos = match.end()
    return out


def _unit(text: str, match: re.Match[str], pos: int, reference: bool) -> CodedAU | int:
    modifiers = (match.group("prefix") or "").upper().replace("/", "")
    suffix = (match.group("suffix") or "").upper()
    number = int(match.group("number"))
    where = f"in AU string {text!r} at character {pos + 1}"
    if number in EYE_MOVEMENT_CODES or number in NON_AU_CODES:
        return number
    try:
        au = AU(number)
    except ValueError:
        raise AUParseError(f"AU {number} is not a FACS Action Unit {where}") from None
    if len(set(modifiers)) != len(modifiers):
        raise AUParseError(f"conflicting prefixes {modifiers!r} on AU {number} {where}")
    sides = {c for c in modifiers + suffix if c in "LRB"}
    if len(sides) > 1:
        raise AUParseError(f"conflicting sides {''.join(sorted(sides))!r} on AU {number} {where}")
    side = Side(sides.pop()) if sides else Side.BOTH  # "B" (bilateral) is Side.BOTH
    trace = "T" in modifiers
    low, high = (match.group("letter") or "").upper(), (match.group("upper") or "").upper()
    if high:  # an intensity range: the coder saw it between two levels
        letter: str | None = f"{low}/{high}"
        intensity = round((INTENSITY_LETTERS[low] + INTENSITY_LETTERS[high]) / 2, 3)
    elif low:
        letter, intensity = low, INTENSITY_LETTERS[low]
    else:
        letter, intensity = None, (TRACE_INTENSITY if trace else 1.0)
    return CodedAU(au, side, intensity, letter, asymmetric="A" in modifiers, trace=trace, reference=reference)


Units = list[CodedAU]
Groups = list[tuple[tuple[CodedAU, ...], ...]]


class _Parser:
    """Recursive descent over the token list; grammar in ``parse_aus``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.ignored: list[int] = []
        self.descriptors: list[str] = []

    def _peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def _fail(self, expected: str) -> AUParseError:
        if self.i < len(self.toks):
            _kind, match, pos = self.toks[self.i]
            got = f"{match.group(0).strip()!r} at character {pos + 1}"
        else:
            got = "the end"
        return AUParseError(f"cannot read AU string {self.text!r}: expected {expected}, got {got}")

    def expr(self, reference: bool) -> tuple[Units, Groups]:
        units: Units = []
        groups: Groups = []
        while True:
            self.term(reference, units, groups)
            if self._peek() != "plus":
                return units, groups
            self.i += 1

    def term(self, reference: bool, units: Units, groups: Groups) -> None:
        kind = self._peek()
        if kind == "unit":
            _k, match, pos = self.toks[self.i]
            self.i += 1
            unit = _unit(self.text, match, pos, reference)
            if isinstance(unit, int):
                self.ignored.append(unit)
            else:
                units.append(unit)
        elif kind == "word":
            self.descriptors.append(self.descriptor())
        elif kind == "ref":
            self.i += 1
            inner_units, inner_groups = self.expr(True)
            self._close()
            units.extend(inner_units)
            groups.extend(inner_groups)
        elif kind == "open":
            self.i += 1
            options = self.options(reference)
            self._close()
            if len(options) == 1:
                units.extend(options[0])  # plain parentheses
            else:
                groups.append(tuple(options))
        else:
            raise self._fail("an Action Unit")

    def descriptor(self) -> str:
        """A run of words (``soft focus``) as written, up to the next token that is not a word."""
        first = self.toks[self.i][1]
        last = first
        while self._peek() == "word":
            last = self.toks[self.i][1]
            self.i += 1
        return self.text[first.start("word"):last.end("word")]

    def options(self, reference: bool) -> list[tuple[CodedAU, ...]]:
        """``expr ('or' expr)*`` without nested groups: the options of one choice."""
        options: list[tuple[CodedAU, ...]] = []
        while True:
            inner_units, inner_groups = self.expr(reference)
            if inner_groups:
                raise self._fail("no nested 'or' groups")
            options.append(tuple(inner_units))
            if self._peek() != "or":
                return options
            self.i += 1

    def _close(self) -> None:
        if self._peek() != "close":
            raise self._fail("')'")
        self.i += 1


def parse_aus(text: object) -> ParsedAUs:
    """Parse one "Action Units" cell.

    Grammar (case-insensitive, whitespace anywhere)::

        cell   := expr ('or' expr)*
        expr   := term (('+' | ',' | ';') term)*
        term   := unit | words | 'ref(' expr ')' | '(' expr ('or' expr)* ')'
        unit   := ['AU'] [mod ['/'] mod ['/'] mod] ['AU'] number [level ['/' level]] ['L'|'R']
        mod    := 'L' | 'R' | 'B' | 'A' | 'T'     (each once; at most one of L, R, B)
        level  := 'A' | 'B' | 'C' | 'D' | 'E'
        words  := word+                          (letters, not glued to a digit)

    Numbers from a spreadsheet cell (``12`` or ``12.0``) are accepted. A cell
    that parses but names no facial AU (only words or non-AU codes) is
    returned with ``has_aus`` False: the caller decides what to do with it.
    Raises ``AUParseError`` (a ``DataError``) naming the string and position.
    """
    raw = _cell_text(text)
    if raw.lower() in _NO_AUS:
        raise AUParseError(f"no Action Units coded ({raw!r})")
    parser = _Parser(raw)
    units, groups = parser.expr(False)
    if parser._peek() == "or":
        # "R6 or R12" without parentheses: the whole cell is one choice.
        if groups:
            raise parser._fail("no 'or' groups inside a top-level 'or'")
        parser.i += 1
        options = [tuple(units), *parser.options(False)]
        units, groups = [], [tuple(options)]
    if parser.i != len(parser.toks):
        raise parser._fail("'+' between units")
    # The same unit written twice ("4+4") counts once.
    seen: dict[tuple[AU, Side, bool], CodedAU] = {}
    for unit in units:
        key = (unit.au, unit.side, unit.reference)
        if key not in seen or unit.intensity > seen[key].intensity:
            seen[key] = unit
    ordered = tuple(u for u in units if seen.get((u.au, u.side, u.reference)) is u)
    return ParsedAUs(
        raw,
        ordered,
        tuple(g for g in groups if any(g)),
        tuple(parser.ignored),
        tuple(parser.descriptors),
    )


_NO_AUS = frozenset({"", "?", "/", "-", "--", "n/a", "na", "none", "nan"})


# ---------------------------------------------------------------------------
# Emotion names
# ---------------------------------------------------------------------------

_EMOTION_ALIASES: dict[str, Emotion] = {
    **{e.value: e for e in Emotion},
    "other": Emotion.OTHERS,  # SAMM
    "happy": Emotion.HAPPINESS,
    "sad": Emotion.SADNESS,
    "angry": Emotion.ANGER,
    "surprised": Emotion.SURPRISE,
    "disgusted": Emotion.DISGUST,
    "fearful": Emotion.FEAR,
    "contemptuous": Emotion.CONTEMPT,
    "repressed": Emotion.REPRESSION,
}


def parse_emotion(text: object) -> Emotion:
    """``"Anger"``, ``"others"``, ``"Other"`` … → ``Emotion`` (case-insensitive)."""
    key = re.sub(r"\s+", " ", _cell_text(text)).lower()
    try:
        return _EMOTION_ALIASES[key]
    except KeyError:
        names = ", ".join(e.value for e in Emotion)
        raise DataError(f"unknown emotion {_cell_text(text)!r} (expected one of {names}, or 'other')") from None


# ---------------------------------------------------------------------------
# Label files
# ---------------------------------------------------------------------------

#: Canonical field → accepted header names (lower case, letters and digits only).
COLUMNS: dict[str, tuple[str, ...]] = {
    "subject": ("subject", "sub", "subjectid", "participant"),
    "filename": ("filename", "file", "clip", "episode", "material", "video"),
    "onset": ("onset", "onsetframe"),
    "apex": ("apex", "apexframe"),
    "offset": ("offset", "offsetframe"),
    "aus": ("aus", "au", "actionunits", "actionunit"),
    "emotion": ("emotion", "estimatedemotion", "label"),
}
#: What each field is, for messages about a header that lacks it.
_ROLES: dict[str, str] = {
    "subject": "the subject column, e.g. 'Subject'",
    "filename": "the clip column, e.g. 'Filename'",
    "onset": "the onset frame column, e.g. 'Onset Frame'",
    "apex": "the apex frame column, e.g. 'Apex Frame'",
    "offset": "the offset frame column, e.g. 'Offset Frame'",
    "aus": "the AU column, e.g. 'Action Units' or 'AU'",
    "emotion": "the label column, e.g. 'Estimated Emotion', 'emotion' or 'label'",
}
_HEADER_SCAN_ROWS = 30
#: A row naming at least this many fields is taken as the header.
_HEADER_MIN_FIELDS = 3
#: At most this many header cells are quoted in a message.
_CELLS_SHOWN = 24
_MISSING_APEX = {"", "/", "-", "--", "?", "n/a", "na", "nan", "none", "-1"}
#: Warnings that ``strict`` turns into errors: frame numbers that are not
#: numbers or contradict each other (a typo in the frames says nothing about
#: the AUs or the label, and scoring from AUs does not use frames).
STRICT_KINDS = frozenset({"frames", "frame-order", "apex-range"})
#: Rows that cannot be scored (no subject, an unknown emotion, an AU string
#: that cannot be read): left out and listed by default, so one odd row of a
#: real coding sheet never costs the whole file; ``strict`` refuses them.
ROW_KINDS = frozenset({"subject", "emotion", "aus"})
#: ``checked`` logs at most this many warnings of one kind (CAS(ME)³ alone has
#: 309 duplicate rows); the rest are counted in one line.
WARNINGS_LOGGED_PER_KIND = 20


@dataclass(frozen=True, slots=True)
class LabelRow:
    """One coded episode. ``line`` is the row number a spreadsheet shows."""

    line: int
    subject: str
    filename: str
    onset: int | None  #: None only when the cell was not a frame number (a warning)
    apex: int | None
    offset: int | None
    aus_text: str
    aus: ParsedAUs | None  #: None when the AU string could not be parsed
    emotion: Emotion

    @property
    def where(self) -> str:
        return f"row {self.line} ({self.subject}/{self.filename})"


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    where: str
    #: "aus", "no-aus", "non-au", "emotion", "frames", "frame-order", "apex-range", "apex-missing",
    #: "duplicate", "subject"
    kind: str
    message: str
    fatal: bool

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class LabelTable:
    """A read label file: usable rows plus every problem found, by row."""

    path: Path
    sha256: str
    source_format: str  #: "xlsx" or "csv"
    rows: tuple[LabelRow, ...]
    problems: tuple[RowProblem, ...] = field(default=())

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(sorted({r.subject for r in self.rows}, key=_subject_order))

    @property
    def unparseable(self) -> tuple[RowProblem, ...]:
        return tuple(p for p in self.problems if p.kind == "aus")

    @property
    def left_out(self) -> tuple[RowProblem, ...]:
        """Rows with nothing to score: unparseable AU strings and cells with no facial AU."""
        return tuple(p for p in self.problems if p.kind in ("aus", "no-aus"))

    def errors(self, *, skip_unparseable: bool = False, strict: bool = False) -> tuple[RowProblem, ...]:
        """The problems that refuse the file: by default none of a single row's
        (those rows are left out, see :meth:`checked`); with ``strict`` the
        unscorable rows (``ROW_KINDS``; AU strings exempt with
        ``skip_unparseable``) and contradicting frame numbers."""
        def refuses(p: RowProblem) -> bool:
            if p.kind in ROW_KINDS:
                return strict and not (skip_unparseable and p.kind == "aus")
            return p.fatal or (strict and p.kind in STRICT_KINDS)

        return tuple(p for p in self.problems if refuses(p))

    @property
    def unscorable(self) -> tuple[RowProblem, ...]:
        """Rows left out because they cannot be scored (``ROW_KINDS``)."""
        return tuple(p for p in self.problems if p.kind in ROW_KINDS)

    def warnings(self) -> tuple[RowProblem, ...]:
        return tuple(p for p in self.problems if not p.fatal)

    def checked(self, *, skip_unparseable: bool = False, strict: bool = False) -> LabelTable:
        """Raise ``DataError`` for the problems that refuse the file; return
        the rows fit to score.

        By default a row that cannot be scored — no subject, an unknown
        emotion, an AU string that cannot be read — is left out and listed
        (it stays in ``problems``, and the log names it), so one odd row of
        a real coding sheet never costs the whole file. Rows whose cell reads
        but names no facial AU (``soft focus`` alone) are left out the same
        way. With ``strict`` unscorable rows (AU strings excepted with
        ``skip_unparseable``) and bad or contradicting frame numbers refuse
        the file. A file with no scorable row is always refused.
        """
        errors = self.errors(skip_unparseable=skip_unparseable, strict=strict)
        if errors:
            raise DataError(_summarise(self.path, errors))
        _log_warnings(self.path, self.warnings() + self.unscorable)
        counts = Counter(p.kind for p in self.unscorable)
        if counts:
            log.warning("%s: left out %s", self.path.name,
                        ", ".join(f"{counts[k]} row(s) with {_KIND_TEXT.get(k, k)}" for k in sorted(counts)))
        empty = {p.line for p in self.problems if p.kind == "no-aus"}
        if empty:
            log.warning("%s: %d row(s) with no facial AU (only descriptors or non-AU codes) left out",
                        self.path.name, len(empty))
        rows = tuple(r for r in self.rows if r.aus is not None)
        if not rows:
            raise DataError(f"{self.path}: no rows with usable AU codes")
        return LabelTable(self.path, self.sha256, self.source_format, rows, self.problems)


def _log_warnings(path: Path, warnings: Sequence[RowProblem]) -> None:
    """Each warning to the log, at most ``WARNINGS_LOGGED_PER_KIND`` per kind,
    then one line with how many more (all of them stay in ``problems``)."""
    counts: Counter[str] = Counter()
    for problem in warnings:
        counts[problem.kind] += 1
        if counts[problem.kind] <= WARNINGS_LOGGED_PER_KIND:
            log.warning("%s: %s", path.name, problem)
    for kind, n in counts.items():
        if n > WARNINGS_LOGGED_PER_KIND:
            log.warning("%s: %d more %r warning(s) not logged (eval's JSON report lists all under source.problems)",
                        path.name, n - WARNINGS_LOGGED_PER_KIND, kind)


def _summarise(path: Path, errors: Sequence[RowProblem], shown: int = 5) -> str:
    counts = Counter(p.kind for p in errors)
    kinds = ", ".join(f"{n} {_KIND_TEXT.get(k, k)}" for k, n in counts.items())
    listed = "; ".join(str(p) for p in errors[:shown])
    more = f"; and {len(errors) - shown} more" if len(errors) > shown else ""
    for p in errors[shown:]:
        log.error("%s: %s", path.name, p)
    return f"{path}: {len(errors)} bad row(s) ({kinds}): {listed}{more}"


_KIND_TEXT = {
    "aus": "unparseable AU string(s)",
    "emotion": "unknown emotion(s)",
    "frames": "frame(s) that are not numbers",
    "frame-order": "offset(s) before onset",
    "apex-range": "apex(es) outside onset..offset",
    "subject": "missing subject(s)",
}


def _subject_order(subject: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", subject)
    return (int(digits) if digits else 1 << 30, subject)


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _norm_header(value: object) -> str:
    return re.sub(r"[^a-z0-9]", "", _cell_text(value).lower())


def _map_header(cells: Sequence[object]) -> dict[str, int]:
    found: dict[str, int] = {}
    names = [_norm_header(c) for c in cells]
    for fieldname, aliases in COLUMNS.items():
        for index, name in enumerate(names):
            if name in aliases:
                found[fieldname] = index
                break
    return found


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def read_labels(path: str | Path) -> LabelTable:
    """Read a coding table (``.xlsx`` or ``.csv``) into a ``LabelTable``.

    Structural problems (missing file, no header, missing columns, no data
    rows) raise at once; row problems are collected in ``problems`` — call
    ``LabelTable.checked()`` to turn the fatal ones into one ``DataError``.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a label file", exit_code=ExitCode.NO_INPUT)
    if not path.is_file():
        raise DataError(f"{path}: label file not found", exit_code=ExitCode.NO_INPUT)
    try:  # an unreadable file is missing input (66), not a malformed table or a bug
        with path.open("rb"):
            pass
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}", exit_code=ExitCode.NO_INPUT) from None
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        header_line, header, records = _xlsx_records(path)
        source_format = "xlsx"
    elif suffix in (".csv", ".tsv", ".txt"):
        header_line, header, records = _csv_records(path)
        source_format = "csv"
    else:
        raise DataError(f"{path}: unsupported label file type {suffix!r} (use .xlsx or .csv)")
    columns = _map_header(header)
    missing = [name for name in COLUMNS if name not in columns]
    if missing:
        named = ", ".join(f"{name} ({_ROLES[name]})" for name in missing)
        raise DataError(
            f"{path}: missing column(s) {named} in the header on row {header_line} (columns found: {_quote(header)})"
        )
    rows, problems = _rows(records, columns)
    if not rows and not problems:
        raise DataError(f"{path}: no data rows below the header on row {header_line}")
    return LabelTable(path, file_sha256(path), source_format, tuple(rows), tuple(problems))


Record = tuple[int, Sequence[object]]


def _quote(cells: Sequence[object]) -> str:
    """A header row's non-empty cells, as written, for a one-line message."""
    names = [_cell_text(c) for c in cells if _cell_text(c)]
    more = f", and {len(names) - _CELLS_SHOWN} more" if len(names) > _CELLS_SHOWN else ""
    return (", ".join(names[:_CELLS_SHOWN]) + more) or "none"


def _find_header(lines: Iterable[Record]) -> tuple[int, Sequence[object], int] | None:
    """The row (in the first ``_HEADER_SCAN_ROWS``) naming the most fields,
    with how many it names; None when no row names any."""
    best: tuple[int, Sequence[object], int] | None = None
    for line, cells in itertools.islice(lines, _HEADER_SCAN_ROWS):
        score = len(_map_header(cells))
        if score > (best[2] if best else 0):
            best = (line, cells, score)
        if score == len(COLUMNS):
            break
    return best


def _first_row(records: Iterable[Record]) -> str:
    for line, cells in records:
        if any(_cell_text(c) for c in cells):
            return f"row {line} reads: {_quote(cells)}"
    return "no non-empty row"


def _xlsx_records(path: Path) -> tuple[int, Sequence[object], list[Record]]:
    import openpyxl  # heavy; only needed here
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .xlsx workbook ({exc})") from None
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise DataError(f"{path}: not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from None
    try:
        names = list(book.sheetnames)
        # CASME II keeps its table on "Sheet1"; other workbooks: first sheet with a header.
        order = (["Sheet1"] if "Sheet1" in names else []) + [n for n in names if n != "Sheet1"]
        # A sheet whose best row names only a field or two is kept as the
        # candidate, so that the message can name what it lacks.
        candidate: tuple[int, Sequence[object], list[Record]] | None = None
        candidate_score = 0
        first = ""
        for name in order:
            sheet = book[name]
            records = [(i, list(row)) for i, row in enumerate(sheet.iter_rows(values_only=True), start=1)]
            first = first or (f"sheet {name!r} " + _first_row(records) if records else "")
            found = _find_header(records)
            if found is None:
                continue
            line, header, score = found
            if score >= _HEADER_MIN_FIELDS:
                return line, header, [r for r in records if r[0] > line]
            if score > candidate_score:
                candidate, candidate_score = (line, header, [r for r in records if r[0] > line]), score
    finally:
        book.close()
    if candidate is not None:
        return candidate
    raise DataError(f"{path}: no sheet has a header row with the columns {', '.join(COLUMNS)} "
                    f"({first or 'every sheet is empty'})")


def _csv_records(path: Path) -> tuple[int, Sequence[object], list[Record]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    sample = "\n".join(text.splitlines()[:_HEADER_SCAN_ROWS])
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        records: list[Record] = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise DataError(f"{path}: not valid CSV near line {reader.line_num} ({exc})") from None
    found = _find_header(records)
    if found is None:
        raise DataError(f"{path}: no header row with the columns {', '.join(COLUMNS)} ({_first_row(records)})")
    line, header, _score = found  # fewer than _HEADER_MIN_FIELDS: read_labels names what is missing
    return line, header, [r for r in records if r[0] > line]


def _frame(value: object) -> int | None:
    text = _cell_text(value)
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _rows(records: Iterable[Record], columns: dict[str, int]) -> tuple[list[LabelRow], list[RowProblem]]:
    rows: list[LabelRow] = []
    problems: list[RowProblem] = []
    seen: dict[tuple[str, str], int] = {}

    def cell(cells: Sequence[object], name: str) -> object:
        index = columns[name]
        return cells[index] if index < len(cells) else None

    for line, cells in records:
        if all(_cell_text(c) == "" for c in cells):
            continue  # blank line / trailing empty spreadsheet rows
        subject = _cell_text(cell(cells, "subject"))
        filename = _cell_text(cell(cells, "filename"))
        where = f"row {line} ({subject or '?'}/{filename or '?'})"
        fatal = False

        def problem(kind: str, message: str, is_fatal: bool = True) -> None:
            nonlocal fatal
            problems.append(RowProblem(line, where, kind, message, is_fatal))
            fatal = fatal or is_fatal

        if not subject:
            problem("subject", "no subject")
        try:
            emotion = parse_emotion(cell(cells, "emotion"))
        except DataError as exc:
            problem("emotion", str(exc))
        onset, offset = _frame(cell(cells, "onset")), _frame(cell(cells, "offset"))
        apex_text = _cell_text(cell(cells, "apex"))
        apex = _frame(apex_text)
        if onset is None or offset is None:
            bad = "onset" if onset is None else "offset"
            apex = None
            problem("frames", f"{bad} {_cell_text(cell(cells, bad))!r} is not a frame number; row kept (scoring "
                    "from AUs does not need frames; --strict refuses it)", False)
        elif offset < onset:
            problem("frame-order", f"offset {offset} is before onset {onset}; row kept (scoring from AUs does not "
                    "need frames; --strict refuses it)", False)
        elif apex_text.lower() in _MISSING_APEX or (apex is not None and apex < 0):
            apex = None
            problem(
                "apex-missing",
                f"apex {apex_text!r} is missing; row kept (scoring from AUs does not need the apex)",
                False,
            )
        elif apex is None:
            problem("frames", f"apex {apex_text!r} is not a frame number; row kept (scoring from AUs does not "
                    "need the apex; --strict refuses it)", False)
        elif not onset <= apex <= offset:
            problem("apex-range", f"apex {apex} is outside onset..offset {onset}..{offset}; row kept (scoring from "
                    "AUs does not need the apex; --strict refuses it)", False)
        aus_text = _cell_text(cell(cells, "aus"))
        parsed: ParsedAUs | None = None
        try:
            parsed = parse_aus(cell(cells, "aus"))
        except AUParseError as exc:
            problems.append(RowProblem(line, where, "aus", str(exc), True))
        else:
            left_out = parsed.left_out()
            if not parsed.has_aus:
                # Nothing to score, but nothing wrong with the rest of the file.
                problem("no-aus", f"no facial Action Unit in {aus_text!r}, only {left_out or 'nothing coded'}; "
                        "row left out of scoring", False)
                parsed = None
            elif left_out:
                problem("non-au", f"{aus_text!r}: left out of scoring: {left_out}; the AUs are scored", False)
        if fatal:
            continue
        key = (subject, filename)
        if key in seen:
            problem("duplicate", f"same subject/filename as row {seen[key]}; both kept", False)
        seen[key] = line
        rows.append(LabelRow(line, subject, filename, onset, apex, offset, aus_text, parsed, emotion))
    return rows, problems
