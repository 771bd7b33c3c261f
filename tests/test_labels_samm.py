"""Reading real coding sheets: SAMM-style FACS notation, ignored parts listed
row by row, and tables whose columns cannot be found (issue 11, item 4).

The fixture tests/fixtures/samm_notation_sheet.csv is made of invented rows in
SAMM's column layout (no SAMM row is copied)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import openpyxl
import pytest

from microexpr.cli import main
from microexpr.errors import DataError, ExitCode
from microexpr.labels import (
    EYE_MOVEMENT_CODES,
    WARNINGS_LOGGED_PER_KIND,
    AUParseError,
    parse_aus,
    read_labels,
)

FIXTURE = Path(__file__).parent / "fixtures" / "samm_notation_sheet.csv"
EMFACS_FIXTURE = Path(__file__).parent / "fixtures" / "samm_emfacs_prototypes.csv"


def _acts(text: object) -> list[tuple[int, str, float]]:
    (reading,) = parse_aus(text).readings()
    return [(int(a.au), a.side.value, round(a.intensity, 3)) for a in reading]


# --- the notation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "descriptors"),
    [
        # The five strings that failed a whole SAMM-notation file (issue 11).
        ("R14+17+soft focus", [(14, "R", 1.0), (17, "B", 1.0)], ("soft focus",)),
        ("A/L12", [(12, "L", 1.0), (12, "R", 0.5)], ()),
        ("B18+25", [(18, "B", 1.0), (25, "B", 1.0)], ()),
        ("10A/B", [(10, "B", 0.3)], ()),
        ("4A/B", [(4, "B", 0.3)], ()),
    ],
)
def test_the_issue_strings_read(text: str, expected: list[tuple[int, str, float]],
                                descriptors: tuple[str, ...]) -> None:
    parsed = parse_aus(text)
    assert _acts(text) == expected
    assert parsed.descriptors == descriptors and parsed.has_aus


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("L12A", [(12, "L", 0.2)]),  # side prefix, intensity letter after the number
        ("A/R12B", [(12, "R", 0.4), (12, "L", 0.2)]),  # the named side is the stronger one
        ("12C/D", [(12, "B", 0.7)]),  # a range is the mean of its two levels
        ("10B/A", [(10, "B", 0.3)]),  # in either order
        ("10A / B", [(10, "B", 0.3)]),
        ("B12E", [(12, "B", 1.0)]),
        ("TB12", [(12, "B", 0.2)]),  # trace, bilateral
        ("ref(10A/B)+12", [(10, "B", 0.15), (12, "B", 1.0)]),  # reference at half of the range
        ("1 + 2 + 26", [(1, "B", 1.0), (2, "B", 1.0), (26, "B", 1.0)]),  # '+' with spaces
        ("R12 +R15", [(12, "R", 1.0), (15, "R", 1.0)]),
    ],
)
def test_samm_notation(text: str, expected: list[tuple[int, str, float]]) -> None:
    assert _acts(text) == expected


@pytest.mark.parametrize("text", ["A/L12", "L/A12", "AL12", "LA12", "A12L", "al12"])
def test_asymmetric_modifiers_in_either_order(text: str) -> None:
    parsed = parse_aus(text)
    (unit,) = parsed.units
    assert unit.asymmetric and unit.side.value == "L"
    assert str(parsed) == "A/L12"
    assert _acts(text) == [(12, "L", 1.0), (12, "R", 0.5)]


def test_unnamed_asymmetry_is_unchanged() -> None:
    # "A14" was read before this change; it must mean the same.
    assert _acts("A14") == [(14, "L", 1.0), (14, "R", 0.5)]
    assert str(parse_aus("A14")) == "A14"


def test_intensity_range_keeps_its_letters() -> None:
    (unit,) = parse_aus("10A/B").units
    assert unit.letter == "A/B" and unit.intensity == pytest.approx(0.3)
    assert str(parse_aus("10A/B")) == "10A/B"


def test_eye_movement_codes_are_noted_and_left_out() -> None:
    parsed = parse_aus("12+61+R62+63+64B")
    assert [int(u.au) for u in parsed.units] == [12]
    assert parsed.ignored == (61, 62, 63, 64)
    assert set(parsed.ignored) == EYE_MOVEMENT_CODES
    assert "eye-movement code(s) 61, 62, 63, 64" in parsed.left_out()
    assert [a.au.value for a in parsed.readings()[0]] == [12]


@pytest.mark.parametrize(
    ("text", "descriptors"),
    [
        ("blink", ("blink",)),
        ("soft focus", ("soft focus",)),
        ("Soft Focus + blink", ("Soft Focus", "blink")),
        ("head tilt+63", ("head tilt",)),
        ("50+eyes narrow", ("eyes narrow",)),
    ],
)
def test_a_cell_with_no_facial_au_reads_but_has_none(text: str, descriptors: tuple[str, ...]) -> None:
    parsed = parse_aus(text)
    assert not parsed.has_aus and parsed.units == () and parsed.descriptors == descriptors
    assert parsed.left_out()


def test_descriptors_do_not_change_the_units() -> None:
    plain, noted = parse_aus("6+12C"), parse_aus("6+soft focus+12C+blink")
    assert plain.readings() == noted.readings()
    assert noted.descriptors == ("soft focus", "blink")
    assert "descriptor(s) 'soft focus', 'blink'" in noted.left_out()


def test_a_descriptor_option_reads_as_nothing() -> None:
    parsed = parse_aus("4+(12 or blink)")
    assert sorted(len(r) for r in parsed.readings()) == [1, 2]
    assert str(parsed) == "4+(12 or nothing)" and parsed.descriptors == ("blink",)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("BL12", "conflicting sides"),
        ("B12R", "conflicting sides"),
        ("AA12", "conflicting prefixes"),
        ("12A/L14", "unexpected '/L14'"),  # a range is two intensity letters only
        ("4A/F", "unexpected"),
        ("12 blink", "'+' between units"),  # words are terms: joined by '+' like units
        ("blink12", "unexpected"),  # a word glued to a number is not a descriptor
        ("12+soft focus+", "expected an Action Unit"),
        ("3+soft focus", "not a FACS Action Unit"),
        ("N/A", "no Action Units"),
    ],
)
def test_malformed_units_are_still_errors(text: str, fragment: str) -> None:
    with pytest.raises(AUParseError) as exc:
        parse_aus(text)
    assert fragment in str(exc.value)


# --- the shared tables: nothing previously read changes ------------------------------


@pytest.mark.parametrize(
    ("name", "rows"),
    [("CASME2-coding-20190701.xlsx", 255), ("casme2_coding.csv", 255),
     ("casme3_partA_coding.csv", 687), ("mmew_micro_coding.csv", 234)],
)
def test_shared_tables_read_whole(shared_dir: Path, name: str, rows: int) -> None:
    table = read_labels(shared_dir / "data" / "labels" / name)
    assert len(table.rows) == rows
    assert not table.unparseable  # CAS(ME)³'s "B28" needed --skip-unparseable before
    assert not [p for p in table.problems if p.kind in ("no-aus", "non-au")]
    assert len(table.checked().rows) == rows
    for row in table.rows:
        assert row.aus is not None and row.aus.has_aus and not row.aus.descriptors and not row.aus.ignored


def test_casme3_bilateral_unit(shared_dir: Path) -> None:
    table = read_labels(shared_dir / "data" / "labels" / "casme3_partA_coding.csv")
    (row,) = [r for r in table.rows if r.aus_text == "B28"]
    assert _acts(row.aus_text) == [(28, "B", 1.0)]


def test_emfacs_fixture_still_reads() -> None:
    table = read_labels(EMFACS_FIXTURE)
    with EMFACS_FIXTURE.open(newline="", encoding="utf-8") as handle:
        lines = [r for r in csv.reader(handle) if len(r) > 5 and r[0].isdigit()]
    assert len(table.rows) == len(lines) and not table.problems


# --- the fixture, read and through `microexpr eval` ----------------------------------


def test_fixture_rows_read_as_written() -> None:
    table = read_labels(FIXTURE)
    read = {r.filename: (str(r.aus) if r.aus else None) for r in table.rows}
    assert read["201_1_1"] == "4A/B+7B"
    assert read["201_1_2"] == "A/R12+R14"
    assert read["201_2_1"] == "6+12C"
    assert read["202_1_1"] == "18+24"
    assert read["202_2_1"] == "1+2+5B"
    assert read["202_3_1"] == "A/L14+T24"
    assert read["203_1_2"] == "25+(R6 or R12)"
    assert read["204_1_1"] == "R14"
    assert read["204_1_2"] is None  # "blink": nothing to score
    assert read["204_2_1"] == "A/L12+4"
    assert read["204_2_2"] == "4+5C/D+7+23"
    assert not table.errors()


def test_fixture_loads_in_eval_and_lists_what_was_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(FIXTURE), "--protocol", "all", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    with FIXTURE.open(newline="", encoding="utf-8") as handle:
        data_rows = sum(1 for r in csv.reader(handle) if len(r) > 5 and r[0].isdigit())
    assert report["source"]["rows"] == data_rows - 1  # only the "blink" row is left out
    problems = {p["row"]: p for p in report["source"]["problems"]}
    assert {row: p["kind"] for row, p in problems.items()} == {
        6: "non-au", 10: "non-au", 15: "non-au", 16: "non-au", 17: "no-aus"}
    assert not any(p["fatal"] for p in problems.values())
    assert "'soft focus'" in problems[6]["message"]
    assert "eye-movement code(s) 61" in problems[10]["message"]
    assert "'head tilt'" in problems[15]["message"]
    assert "63" in problems[16]["message"] and "'blink'" in problems[16]["message"]
    assert "row left out" in problems[17]["message"] and problems[17]["where"] == "row 17 (204/204_1_2)"
    # The log says the same, row by row, and counts the row left out.
    for row in problems.values():
        assert row["where"] in captured.err
    assert "1 row(s) with no facial AU (only descriptors or non-AU codes) left out" in captured.err
    assert "Traceback" not in captured.err


def test_fit_prototypes_reads_the_fixture(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert main(["fit-prototypes", str(FIXTURE), "-o", str(out), "--dataset", "invented"]) == 0
    assert out.is_file()


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_one_descriptor_row_never_fails_a_file_but_no_aus_at_all_does(tmp_path: Path) -> None:
    header = ["subject", "filename", "onset", "apex", "offset", "aus", "emotion"]
    path = _write(tmp_path / "a.csv", header, [
        ["01", "a", 1, 2, 3, "12", "happiness"],
        ["01", "b", 1, 2, 3, "soft focus", "others"],
        ["02", "c", 1, 2, 3, "4+7", "disgust"],
    ])
    table = read_labels(path)
    assert [(p.line, p.kind, p.fatal) for p in table.problems] == [(3, "no-aus", False)]
    assert [r.filename for r in table.checked().rows] == ["a", "c"]
    assert [p.where for p in table.left_out] == ["row 3 (01/b)"] and not table.unparseable
    only = _write(tmp_path / "b.csv", header, [["01", "a", 1, 2, 3, "blink", "others"]])
    with pytest.raises(DataError, match="no rows with usable AU codes") as exc:
        read_labels(only).checked()
    assert exc.value.exit_code == ExitCode.DATA_ERROR


def test_warnings_are_logged_at_a_bounded_rate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    header = ["subject", "filename", "onset", "apex", "offset", "aus", "emotion"]
    n = WARNINGS_LOGGED_PER_KIND + 7
    path = _write(tmp_path / "dup.csv", header,
                  [["01", "a", 1, 2, 3, "12+blink", "happiness"]] * n + [["02", "b", 1, 2, 3, "4", "others"]])
    table = read_labels(path)
    assert sum(p.kind == "non-au" for p in table.problems) == n  # every row is listed ...
    with caplog.at_level(logging.WARNING, logger="microexpr.labels"):
        table.checked()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("left out of scoring" in m for m in messages) == WARNINGS_LOGGED_PER_KIND  # ... the log is bounded
    assert any(f"{n - WARNINGS_LOGGED_PER_KIND} more 'non-au' warning(s) not logged" in m for m in messages)


# --- tables whose columns cannot be found -------------------------------------------


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize(
    ("header", "missing", "found"),
    [
        # The frames are found, the AU and label columns are not.
        (["Subject", "Filename", "Onset", "Apex", "Offset", "Codes", "Class"],
         ["aus (the AU column", "emotion (the label column"],
         "Subject, Filename, Onset, Apex, Offset, Codes, Class"),
        # Only two fields recognised: still named, not "no header row".
        (["Participant", "Clip", "FACS", "Feeling"],
         ["onset (the onset frame column", "aus (the AU column", "emotion (the label column"],
         "Participant, Clip, FACS, Feeling"),
        (["Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame", "Action Units", "Class"],
         ["emotion (the label column"], "Action Units, Class"),
    ],
)
def test_missing_columns_name_the_role_and_the_columns_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], header: list[str], missing: list[str], found: str
) -> None:
    path = _write(tmp_path / "sheet.csv", header, [["006", "006_1", 1, 2, 3, "4", "Anger"][: len(header)]])
    assert main(["eval", str(path)]) == ExitCode.DATA_ERROR
    line = _error_line(capsys)
    assert line.startswith(f"microexpr: error: {path}: missing column(s) ")
    for fragment in missing:
        assert fragment in line
    assert f"columns found: {header[0]}" in line and found in line


def test_no_header_names_what_the_first_row_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sheet.csv"
    path.write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    assert main(["eval", str(path)]) == ExitCode.DATA_ERROR
    line = _error_line(capsys)
    assert "no header row with the columns" in line and "row 1 reads: a, b, c" in line


def test_xlsx_without_a_header_names_the_sheet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Codes"
    sheet.append(["x", "y", "z"])
    sheet.append([1, 2, 3])
    path = tmp_path / "sheet.xlsx"
    book.save(path)
    assert main(["eval", str(path)]) == ExitCode.DATA_ERROR
    line = _error_line(capsys)
    assert "no sheet has a header row" in line and "sheet 'Codes' row 1 reads: x, y, z" in line


def test_xlsx_with_a_partial_header_names_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame", "Codes", "Estimated Emotion"])
    sheet.append([6, "006_1", 1, 2, 3, "4", "Anger"])
    path = tmp_path / "sheet.xlsx"
    book.save(path)
    assert main(["eval", str(path)]) == ExitCode.DATA_ERROR
    line = _error_line(capsys)
    assert "missing column(s) aus (the AU column" in line and "columns found: Subject" in line and "Codes" in line
