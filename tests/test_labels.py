"""AU notation parser and label-file readers (CASME II .xlsx and CSV, generic CSV)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest

from microexpr.errors import DataError, ExitCode
from microexpr.facs import AU, Emotion, Side
from microexpr.labels import AUParseError, LabelTable, parse_aus, parse_emotion, read_labels

# --- the notation -------------------------------------------------------------------


def _acts(text: object) -> list[tuple[int, str, float]]:
    (reading,) = parse_aus(text).readings()
    return [(int(a.au), a.side.value, round(a.intensity, 3)) for a in reading]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4+7+L10", [(4, "B", 1.0), (7, "B", 1.0), (10, "L", 1.0)]),  # CASME II
        ("R14", [(14, "R", 1.0)]),
        ("7B+15A", [(7, "B", 0.4), (15, "B", 0.2)]),  # intensity letters
        ("12E", [(12, "B", 1.0)]),
        ("R14A", [(14, "R", 0.2)]),  # side prefix and intensity letter
        ("12R", [(12, "R", 1.0)]),  # side written after the number
        ("T12", [(12, "B", 0.2)]),  # trace
        ("T12C", [(12, "B", 0.6)]),  # a letter wins over the trace default
        ("AU4", [(4, "B", 1.0)]),  # stray AU prefix
        ("AUR2+au 7", [(2, "R", 1.0), (7, "B", 1.0)]),
        (" l12 + r14 ", [(12, "L", 1.0), (14, "R", 1.0)]),  # whitespace, lower case
        ("R12 + R15", [(12, "R", 1.0), (15, "R", 1.0)]),
        ("ref(7B)+12", [(7, "B", 0.2), (12, "B", 1.0)]),  # reference unit at half intensity
        ("4+4", [(4, "B", 1.0)]),  # the same unit twice counts once
        ("AU4, AU7", [(4, "B", 1.0), (7, "B", 1.0)]),  # comma-separated tables
        (12, [(12, "B", 1.0)]),  # spreadsheet numbers
        (4.0, [(4, "B", 1.0)]),
    ],
)
def test_parse_notation(text: object, expected: list[tuple[int, str, float]]) -> None:
    assert _acts(text) == expected


def test_asymmetric_prefix_is_both_sides_one_weaker() -> None:
    parsed = parse_aus("A14")
    assert parsed.units[0].asymmetric and parsed.units[0].side is Side.BOTH
    (reading,) = parsed.readings()
    sides = {a.side: a.intensity for a in reading}
    assert set(sides) == {Side.LEFT, Side.RIGHT}
    assert min(sides.values()) < max(sides.values())
    assert str(parsed) == "A14"


def test_reference_and_trace_flags_are_kept() -> None:
    parsed = parse_aus("ref(7B)+T12")
    ref, trace = parsed.units
    assert ref.reference and ref.letter == "B" and not ref.trace
    assert trace.trace and not trace.reference
    assert str(parsed) == "ref(7B)+T12"


def test_or_alternatives_give_one_reading_each() -> None:
    parsed = parse_aus("25+(R6 or R12)")
    assert parsed.ambiguous
    readings = parsed.readings()
    assert len(readings) == 2
    assert {tuple((a.au, a.side) for a in r) for r in readings} == {
        ((AU(25), Side.BOTH), (AU(6), Side.RIGHT)),
        ((AU(25), Side.BOTH), (AU(12), Side.RIGHT)),
    }
    assert str(parsed) == "25+(R6 or R12)"


def test_top_level_or_is_one_choice() -> None:
    parsed = parse_aus("R6 or R12+25")
    assert parsed.units == () and len(parsed.alternatives) == 1
    assert sorted(len(r) for r in parsed.readings()) == [1, 2]
    with pytest.raises(AUParseError):
        parse_aus("4 or (5 or 6)")


def test_alternatives_may_be_combinations() -> None:
    readings = parse_aus("4+(6+12 or 14)").readings()
    assert sorted(len(r) for r in readings) == [2, 3]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no Action Units"),
        ("?", "no Action Units"),
        ("/", "no Action Units"),
        (None, "no Action Units"),
        ("4 7", "'+' between units"),
        ("12+", "expected an Action Unit"),
        ("3", "not a FACS Action Unit"),
        ("LR12", "conflicting"),
        ("x12", "unexpected"),
        ("12F", "unexpected"),
        ("(4 or 5", "')'"),
        ("(4 or (5 or 6))", "nested"),
        ("ref(4", "')'"),
    ],
)
def test_unparseable_strings_raise_with_the_text(text: object, fragment: str) -> None:
    with pytest.raises(AUParseError) as exc:
        parse_aus(text)
    assert fragment in str(exc.value)
    assert isinstance(exc.value, DataError)


@pytest.mark.parametrize(
    ("text", "emotion"),
    [
        ("happiness", Emotion.HAPPINESS),
        ("Anger", Emotion.ANGER),  # SAMM capitalisation
        ("Contempt", Emotion.CONTEMPT),
        ("Other", Emotion.OTHERS),  # SAMM's singular
        ("others", Emotion.OTHERS),
        (" REPRESSION ", Emotion.REPRESSION),
        ("Surprise", Emotion.SURPRISE),
    ],
)
def test_emotion_names(text: str, emotion: Emotion) -> None:
    assert parse_emotion(text) is emotion


def test_unknown_emotion_lists_the_valid_ones() -> None:
    with pytest.raises(DataError, match="unknown emotion 'joy'.*happiness"):
        parse_emotion("joy")


# --- the readers --------------------------------------------------------------------


def _signature(table: LabelTable) -> list[tuple[object, ...]]:
    return [(r.subject, r.filename, r.onset, r.apex, r.offset, str(r.aus), r.emotion) for r in table.rows]


def test_xlsx_and_csv_readers_agree(casme2_xlsx: Path, casme2_csv: Path) -> None:
    xlsx, csv_table = read_labels(casme2_xlsx), read_labels(casme2_csv)
    assert xlsx.source_format == "xlsx" and csv_table.source_format == "csv"
    assert _signature(xlsx) == _signature(csv_table)
    assert xlsx.subjects == csv_table.subjects
    with casme2_csv.open(newline="", encoding="utf-8") as handle:
        raw = list(csv.DictReader(handle))
    assert len(csv_table.rows) == len(raw)
    assert set(csv_table.subjects) == {r["subject"] for r in raw}
    # Every AU string of CASME II parses: nothing is dropped.
    assert not xlsx.unparseable and not csv_table.unparseable
    assert all(r.aus is not None for r in csv_table.rows)


def test_missing_apex_is_a_warning_and_the_row_is_kept(casme2_csv: Path, casme2_xlsx: Path) -> None:
    for path in (casme2_csv, casme2_xlsx):
        table = read_labels(path)
        missing = [p for p in table.problems if p.kind == "apex-missing"]
        assert missing and not any(p.fatal for p in missing)
        kept = {r.line for r in table.rows if r.apex is None}
        assert kept == {p.line for p in missing}
        assert all(p.where.startswith(f"row {p.line} (") for p in missing)
    assert not table.checked().errors()


def test_one_sided_units_keep_their_side(casme2_csv: Path) -> None:
    table = read_labels(casme2_csv)
    one_sided = [r for r in table.rows if any(u.side is not Side.BOTH for u in r.aus.units)]  # type: ignore[union-attr]
    assert one_sided
    for row in one_sided:
        assert any(ch in row.aus_text for ch in "LR")


def _write_csv(path: Path, rows: list[list[object]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or ["subject", "filename", "onset", "apex", "offset", "aus", "emotion"])
        writer.writerows(rows)
    return path


def test_generic_csv_in_samm_notation(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "samm.csv", [
        ["006", "006_1_2", 100, 120, 140, "4+7B", "Anger"],
        ["006", "006_1_3", 200, 210, 230, "R14A", "Contempt"],
        ["007", "007_3_1", 10, 20, 40, "(R6 or R12)+25", "Happiness"],
        ["007", "007_5_2", 50, 60, 70, "ref(7B)+T4", "Other"],
    ])
    table = read_labels(path).checked()
    assert [r.emotion for r in table.rows] == [Emotion.ANGER, Emotion.CONTEMPT, Emotion.HAPPINESS, Emotion.OTHERS]
    assert table.rows[2].aus is not None and len(table.rows[2].aus.readings()) == 2
    assert table.subjects == ("006", "007")


def test_xlsx_with_a_preamble_and_samm_headers(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "FACS codes"
    sheet.append(["A dataset description line"])
    sheet.append([])
    sheet.append(["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
                  "Action Units", "Estimated Emotion"])
    sheet.append([6, "006_1_2", 1, 5562, 5588, 5632, "4+7B", "Anger"])
    sheet.append([6, "006_1_3", 1, 3912, -1, 3948, "R14", "Contempt"])
    path = tmp_path / "samm.xlsx"
    book.save(path)
    table = read_labels(path)
    assert [(r.subject, r.onset, r.apex, r.emotion) for r in table.rows] == [
        ("6", 5562, 5588, Emotion.ANGER), ("6", 3912, None, Emotion.CONTEMPT)]
    assert [p.kind for p in table.problems] == ["apex-missing"]
    assert table.rows[0].line == 4  # rows are named as the spreadsheet numbers them


def test_row_problems_name_the_rows(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "bad.csv", [
        ["01", "ok", 1, 2, 3, "12", "happiness"],
        ["01", "joy", 1, 2, 3, "12", "joy"],
        ["02", "apex", 10, 30, 20, "4", "others"],
        ["02", "parse", 1, 2, 3, "4 7", "disgust"],
        ["02", "order", 9, 5, 3, "4", "disgust"],
    ])
    table = read_labels(path)
    kinds = {p.line: p.kind for p in table.problems}
    assert kinds == {3: "emotion", 4: "apex-range", 5: "aus", 6: "frame-order"}
    # By default the unscorable rows are left out and listed, the rest kept.
    kept = table.checked()
    assert [r.filename for r in kept.rows] == ["ok", "apex", "order"]
    assert [p.line for p in kept.unscorable] == [3, 5]
    # Strict refuses them, with the contradicting frames, in one line.
    with pytest.raises(DataError) as exc:
        table.checked(strict=True)
    message = str(exc.value)
    assert "4 bad row(s)" in message and "apex 30 is outside onset..offset 10..20" in message
    assert "row 3 (01/joy)" in message and "row 5 (02/parse)" in message and "\n" not in message
    # Strict with skip_unparseable still refuses the unknown emotion.
    with pytest.raises(DataError, match="3 bad row"):
        table.checked(strict=True, skip_unparseable=True)


def test_frame_contradictions_are_warnings_by_default(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "frames.csv", [
        ["01", "a", 10, 30, 20, "12", "happiness"],
        ["01", "b", 9, 5, 3, "4", "others"],
        ["01", "c", "x", 5, 3, "4", "others"],
    ])
    table = read_labels(path)
    assert {p.line: (p.kind, p.fatal) for p in table.problems} == {
        2: ("apex-range", False), 3: ("frame-order", False), 4: ("frames", False)}
    assert [(r.filename, r.onset) for r in table.rows] == [("a", 10), ("b", 9), ("c", None)]
    with pytest.raises(DataError, match="3 bad row"):
        table.checked(strict=True)


def test_non_au_facs_codes_are_ignored_with_a_warning(tmp_path: Path) -> None:
    parsed = parse_aus("12+50+84")
    assert [int(u.au) for u in parsed.units] == [12] and parsed.ignored == (50, 84)
    path = _write_csv(tmp_path / "codes.csv", [["01", "a", 1, 2, 3, "12+50", "happiness"]])
    table = read_labels(path)
    assert [p.kind for p in table.problems] == ["non-au"] and not table.problems[0].fatal
    assert "50" in table.problems[0].message


def test_skip_unparseable_keeps_the_rest(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "aus.csv", [
        ["01", "a", 1, 2, 3, "12", "happiness"],
        ["01", "b", 1, 2, 3, "12??", "happiness"],
        ["02", "c", 1, 2, 3, "4", "others"],
    ])
    table = read_labels(path)
    with pytest.raises(DataError, match="1 unparseable AU string"):
        table.checked(strict=True)
    kept = table.checked()
    assert [r.filename for r in kept.rows] == ["a", "c"]
    assert [p.where for p in kept.unparseable] == ["row 3 (01/b)"]


@pytest.mark.parametrize(
    ("content", "fragment", "code"),
    [
        ("subject,filename,onset,offset,aus,emotion\n01,a,1,3,12,happiness\n", "missing column(s) apex", 65),
        ("subject,filename,onset,apex,offset,aus,emotion\n", "no data rows", 65),
        ("", "empty", 65),
        ("just some text\nwithout a header\n", "no header row", 65),
    ],
)
def test_structural_problems(tmp_path: Path, content: str, fragment: str, code: int) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_labels(path)
    assert fragment in str(exc.value) and str(path) in str(exc.value)
    assert exc.value.exit_code == code


def test_missing_file_and_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        read_labels(tmp_path / "nope.csv")
    assert exc.value.exit_code == ExitCode.NO_INPUT
    other = tmp_path / "labels.json"
    other.write_text("{}", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported label file type"):
        read_labels(other)
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="not a readable .xlsx"):
        read_labels(broken)


def test_folder_is_named_as_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from microexpr.cli import main

    with pytest.raises(DataError, match="is a folder, not a label file") as exc:
        read_labels(tmp_path)
    assert exc.value.exit_code == ExitCode.NO_INPUT
    assert main(["fit-prototypes", str(tmp_path), "-o", str(tmp_path / "p.json")]) == ExitCode.NO_INPUT
    assert capsys.readouterr().err.strip().splitlines() == [f"microexpr: error: {tmp_path}: is a folder, not a label file"]


#: Root reads any file; drop the two capabilities that let it, so the child
#: meets a real permission error (as a non-root user does without help).
_NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
           "--inh-caps", "-dac_override,-dac_read_search"]


def test_unreadable_label_file_is_missing_input_not_a_bug(tmp_path: Path, casme2_csv: Path) -> None:
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.fail("running as root needs util-linux setpriv to meet a permission error")
    for name in ("labels.csv", "labels.xlsx"):
        path = tmp_path / name
        shutil.copyfile(casme2_csv, path)
        path.chmod(0)
        prefix = _NO_DAC if os.geteuid() == 0 else []
        proc = subprocess.run([*prefix, sys.executable, "-m", "microexpr", "eval", str(path)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == ExitCode.NO_INPUT, proc.stderr
        assert proc.stderr.strip().splitlines() == [f"microexpr: error: {path}: cannot read: Permission denied"]
