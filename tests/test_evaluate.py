"""``microexpr eval``: metrics, leave-one-subject-out without leakage, the CLI, bad input."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from fixtures.labels import write_labels

from microexpr.cli import main
from microexpr.errors import ExitCode
from microexpr.evaluate import (
    PROTOCOLS,
    EvalCase,
    NaiveBayes,
    evaluate_protocol,
    paper_overlap,
    score,
)
from microexpr.facs import Emotion
from microexpr.labels import parse_aus, read_labels

H, D, O, S = Emotion.HAPPINESS, Emotion.DISGUST, Emotion.OTHERS, Emotion.SURPRISE


# --- metrics ----------------------------------------------------------------------


def test_score_by_hand() -> None:
    truth = [H, H, H, D, D, O]
    pred = [H, H, D, D, O, O]
    s = score(truth, pred, [H, D, O])
    assert s.accuracy == pytest.approx(4 / 6)
    per = {c.label: c for c in s.per_class}
    assert per[H].precision == 1.0 and per[H].recall == pytest.approx(2 / 3) and per[H].support == 3
    assert per[D].precision == pytest.approx(1 / 2) and per[D].recall == pytest.approx(1 / 2)
    assert per[O].precision == pytest.approx(1 / 2) and per[O].recall == 1.0
    assert s.uar == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert s.uf1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert s.confusion == ((2, 1, 0), (0, 1, 1), (0, 0, 1))


def test_score_counts_a_label_with_no_support_only_as_a_false_positive() -> None:
    s = score([H, H], [H, S], [H, S])
    assert s.uf1 == pytest.approx(2 / 3)  # only happiness has support
    assert {c.label: c.precision for c in s.per_class}[S] == 0.0


def test_baselines_by_hand() -> None:
    labels = list(PROTOCOLS["5class"] or ())
    assert paper_overlap(parse_aus("6+12").readings(), labels) is H
    assert paper_overlap(parse_aus("38").readings(), labels) is O
    assert paper_overlap(parse_aus("9+10").readings(), labels) is D
    readings = [parse_aus(t).readings() for t in ("12", "12", "6+12", "4", "4", "4+7", "9")]
    nb = NaiveBayes().fit(readings, [H, H, H, O, O, D, D], labels)
    assert nb.predict(parse_aus("12").readings()) is H
    assert nb.predict(parse_aus("9").readings()) is D


# --- leave-one-subject-out --------------------------------------------------------------


def test_loso_refits_without_the_test_subject(tmp_path: Path) -> None:
    # Subject "a" is the only one who codes AU38 as happiness (6 rows); the
    # others code it as "others" (2 rows). Fitted on everyone, AU38 would be
    # happiness; fitted without "a" it can only be "others". No rule covers
    # AU38, so whatever says happiness for a's rows has seen a's labels.
    rows = [("a", "38", "happiness")] * 6 + [("b", "38", "others"), ("c", "38", "others")]
    rows += [("b", "12", "happiness"), ("c", "6+12", "happiness"), ("b", "4", "others"), ("c", "4", "others")]
    table = read_labels(write_labels(tmp_path / "leak.csv", rows)).checked()
    result = evaluate_protocol(table, "all")
    a_rows = [i for i, r in enumerate(result.rows) if r.subject == "a"]
    for method in ("classifier", "prototypes-only", "naive-bayes"):
        predicted = result.methods[method].predicted
        assert [predicted[i] for i in a_rows] == [O] * 6, method
    # Control: the same prototypes fitted on all rows do say happiness.
    from microexpr.classify.decide import Classifier
    from microexpr.classify.prototypes import PrototypeSet

    leaked = PrototypeSet.fit([(r.aus.readings(), r.emotion) for r in table.rows if r.aus is not None])
    assert Classifier(leaked, use_rules=False, labels=(H, O)).classify(parse_aus("38").readings()[0]).label is H


def test_progress_and_refine_seam(tmp_path: Path) -> None:
    rows = [("a", "12", "happiness"), ("a", "4", "others"), ("a", "1+2", "surprise"), ("a", "4+7", "disgust"),
            ("b", "12", "happiness"), ("b", "4+17", "others"), ("b", "1+2", "surprise"), ("b", "4+7", "disgust"),
            ("c", "6+12", "happiness"), ("c", "4+7", "others"), ("c", "2", "surprise"), ("c", "4+7", "disgust")]
    table = read_labels(write_labels(tmp_path / "toy.csv", rows)).checked()
    ticks: list[int] = []
    seen: list[tuple[EvalCase, object]] = []

    def refine(cases):  # type: ignore[no-untyped-def]
        seen.extend(cases)
        return [Emotion.DISGUST for _ in cases]

    result = evaluate_protocol(table, "5class", refine=refine, progress=ticks.append)
    assert len(ticks) == len(table.subjects)
    main_result = result.methods["classifier"]
    ambiguous = [i for i, d in enumerate(main_result.decisions) if d is not None and d.ambiguous]
    assert ambiguous and len(ambiguous) < len(table.rows)
    assert len(seen) == len(ambiguous)
    assert all(d.ambiguous and case.activations for case, d in seen)  # type: ignore[attr-defined]
    refined = result.methods["classifier+reasoner"].predicted
    for i, (before, after) in enumerate(zip(main_result.predicted, refined, strict=True)):
        assert after == (Emotion.DISGUST if i in ambiguous else before)


# --- the command ----------------------------------------------------------------------


def test_eval_cli_on_casme2(casme2_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    assert main(["eval", str(casme2_csv), "--json", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    with casme2_csv.open(newline="", encoding="utf-8") as handle:
        raw = list(csv.DictReader(handle))
    assert report["schema"] == "microexpr.eval/1"
    assert report["source"]["rows"] == len(raw)
    assert report["source"]["subjects"] == len({r["subject"] for r in raw})
    assert report["source"]["sha256"] == read_labels(casme2_csv).sha256
    assert set(report["protocols"]) == {"5class", "all"}
    five = {e.value for e in PROTOCOLS["5class"] or ()}
    expected_rows = {"5class": sum(r["emotion"] in five for r in raw), "all": len(raw)}
    for name, protocol in report["protocols"].items():
        assert protocol["rows"] == expected_rows[name]
        assert {"classifier", "rules-only", "prototypes-only", "paper-table", "naive-bayes",
                "classifier-2fold"} <= set(protocol["methods"])
        assert set(protocol["ceilings"]) >= {"loso_optimistic_configuration_accuracy",
                                             "in_sample_configuration_uf1"}
        for method in protocol["methods"].values():
            assert {"accuracy", "uf1", "uar", "per_class", "confusion", "description"} <= set(method)
            matrix = method["confusion"]["rows_true_columns_predicted"]
            assert sum(map(sum, matrix)) == protocol["rows"]
            diagonal = sum(matrix[i][i] for i in range(len(matrix)))
            assert method["accuracy"] == pytest.approx(diagonal / protocol["rows"], abs=1e-4)
            for row in method["per_class"]:
                assert set(row) == {"class", "precision", "recall", "f1", "support"}
                assert all(0.0 <= row[k] <= 1.0 for k in ("precision", "recall", "f1"))
            supports = {row["class"]: row["support"] for row in method["per_class"]}
            counts = Counter(r["emotion"] for r in raw if name == "all" or r["emotion"] in five)
            assert {k: v for k, v in supports.items() if v} == dict(counts)
        assert protocol["methods"]["classifier"]["ambiguous"] >= 0
    problems = report["source"]["problems"]
    assert [p["kind"] for p in problems] == ["apex-missing"] and not problems[0]["fatal"]
    assert json.loads((out / "eval.json").read_text(encoding="utf-8"))["protocols"].keys() == {"5class", "all"}
    markdown = (out / "eval.md").read_text(encoding="utf-8")
    assert "| class | precision | recall | F1 | support |" in markdown and "naive-bayes" in markdown
    pngs = sorted(out.glob("confusion_*.png"))
    assert {p.name for p in pngs} >= {"confusion_5class_classifier.png", "confusion_all_naive-bayes.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_eval_text_report_and_samm_protocol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [("006", "4+7B", "Anger"), ("006", "R14A", "Contempt"), ("006", "12", "Happiness"),
            ("007", "4+7", "Anger"), ("007", "L14", "Contempt"), ("007", "6+12", "Happiness"),
            ("008", "4C", "Anger"), ("008", "1+2", "Surprise"), ("008", "(R6 or R12)", "Happiness"),
            ("009", "ref(7B)+24", "Other"), ("009", "1+2+5", "Surprise"), ("009", "9", "Disgust")]
    path = write_labels(tmp_path / "samm.csv", rows)
    assert main(["eval", str(path), "--protocol", "samm5", "--protocol", "5class"]) == 0
    text = capsys.readouterr().out
    assert "## Protocol `samm5` (anger, contempt, happiness, surprise, others): 11 rows" in text
    assert "Left out (label not in the protocol): disgust 1" in text
    assert "no rows labelled repression" in text and "--protocol samm5" in text


# --- bad input through the CLI ---------------------------------------------------------


def _last_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize(
    ("content", "code", "fragments"),
    [
        ("subject,filename,onset,apex,offset,emotion\n01,a,1,2,3,happiness\n", 65, ["missing column(s) aus"]),
        ("subject,filename,onset,apex,offset,aus,emotion\n01,a,1,2,3,12,joy\n02,b,1,2,3,4,others\n", 65,
         ["at least 2 subjects", "found 1"]),  # the 'joy' row is left out (listed), one subject remains
        ("subject,filename,onset,apex,offset,aus,emotion\n01,a,1,2,3,12,happiness\n02,b,1,2,3,4,\n", 65,
         ["at least 2 subjects", "found 1"]),  # the row with no emotion is left out (listed)
        ("subject,filename,onset,apex,offset,aus,emotion\n", 65, ["no data rows"]),
        ("", 65, ["empty"]),
        ("subject,filename,onset,apex,offset,aus,emotion\n01,a,1,2,3,12,happiness\n01,b,1,2,3,4,others\n", 65,
         ["at least 2 subjects", "found 1"]),
    ],
)
def test_eval_bad_label_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, code: int,
                              fragments: list[str]) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(content, encoding="utf-8")
    assert main(["eval", str(path)]) == code
    line = _last_line(capsys)
    assert line.startswith("microexpr: error:") and str(path) in line
    for fragment in fragments:
        assert fragment in line


def test_eval_unparseable_rows_are_left_out_and_listed_unless_strict(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rows = [("01", "12", "happiness"), ("01", "12 6", "happiness"), ("02", "4", "others"), ("02", "?", "others"),
            ("03", "1+2", "surprise"), ("03", "4+7", "disgust")]
    path = write_labels(tmp_path / "labels.csv", rows)
    # One odd row never costs a real coding sheet: left out, listed, scored without it.
    assert main(["eval", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["source"]["rows"] == 4
    assert [p["row"] for p in report["source"]["problems"] if p["kind"] == "aus"] == [3, 5]
    assert "left out 2 row(s) with unparseable AU string(s)" in captured.err
    assert "row 3 (01/EP01)" in captured.err and "row 5 (02/EP03)" in captured.err
    # --strict refuses them, naming the rows; --skip-unparseable exempts AU strings from it.
    assert main(["eval", str(path), "--strict"]) == ExitCode.DATA_ERROR
    line = _last_line(capsys)
    assert "2 bad row(s) (2 unparseable AU string(s))" in line
    assert "row 3 (01/EP01)" in line and "row 5 (02/EP03)" in line
    assert main(["eval", str(path), "--strict", "--skip-unparseable", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"]["rows"] == 4


def test_eval_unknown_emotion_row_is_left_out_not_the_file(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    rows = [("01", "12", "happiness"), ("01", "4", "bemused"), ("02", "4", "others"), ("02", "1+2", "surprise")]
    path = write_labels(tmp_path / "labels.csv", rows)
    assert main(["eval", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["source"]["rows"] == 3
    assert "unknown emotion 'bemused'" in captured.err and "row 3 (01/EP01)" in captured.err
    assert main(["eval", str(path), "--strict"]) == ExitCode.DATA_ERROR
    assert "1 bad row(s) (1 unknown emotion(s))" in _last_line(capsys)


def test_eval_missing_apex_warns_and_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("subject,filename,onset,apex,offset,aus,emotion\n"
                    "01,a,1,/,3,12,happiness\n01,b,1,2,3,4,others\n02,c,1,2,3,12,happiness\n02,d,5,6,9,4,others\n",
                    encoding="utf-8")
    assert main(["eval", str(path), "--protocol", "5class"]) == 0
    captured = capsys.readouterr()
    assert "row 2 (01/a): apex '/' is missing; row kept" in captured.err
    assert "4 rows" in captured.out


def test_eval_contradicting_frames_warn_unless_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "01,a,10,30,20,12,happiness\n01,b,x,2,3,4,others\n02,c,1,2,3,12,happiness\n02,d,9,5,3,4,others\n"
    path = tmp_path / "labels.csv"
    path.write_text("subject,filename,onset,apex,offset,aus,emotion\n" + rows, encoding="utf-8")
    assert main(["eval", str(path), "--protocol", "5class"]) == 0
    err = capsys.readouterr().err
    assert "row 2 (01/a): apex 30 is outside onset..offset 10..20; row kept" in err
    assert "row 5 (02/d): offset 3 is before onset 9; row kept" in err
    assert "row 3 (01/b): onset 'x' is not a frame number; row kept" in err
    assert main(["eval", str(path), "--strict"]) == ExitCode.DATA_ERROR
    line = _last_line(capsys)
    assert "3 bad row(s)" in line and "row 2 (01/a)" in line and "row 5 (02/d)" in line


def test_eval_single_sample_subject_still_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [("01", "12", "happiness"), ("01", "4", "others"), ("02", "12", "happiness"), ("02", "4+7", "disgust"),
            ("03", "6+12", "happiness")]
    path = write_labels(tmp_path / "labels.csv", rows)
    assert main(["eval", str(path), "--json", "--protocol", "all"]) == 0
    report = json.loads(capsys.readouterr().out)
    notes = report["protocols"]["all"]["notes"]
    assert any("03" in n and "single row" in n and "LOSO still works" in n for n in notes)
    assert report["protocols"]["all"]["rows"] == 5


def test_eval_usage_errors(tmp_path: Path, casme2_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path / "missing.csv")]) == ExitCode.NO_INPUT
    assert "label file not found" in _last_line(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(casme2_csv), "--protocol", "7class"])
    assert exc.value.code == ExitCode.USAGE
    capsys.readouterr()
    assert main(["eval", str(casme2_csv), "--ambiguous-confidence", "2"]) == ExitCode.USAGE
    assert "must be in 0..1" in _last_line(capsys)


def test_eval_unwritable_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [("01", "12", "happiness"), ("01", "4", "others"), ("02", "12", "happiness"), ("02", "4", "others")]
    path = write_labels(tmp_path / "labels.csv", rows)
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    assert main(["eval", str(path), "--out", str(blocker / "dir")]) == ExitCode.IO_ERROR
    assert "cannot write evaluation output" in _last_line(capsys)


def test_eval_with_fixed_prototypes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [("01", "12", "happiness"), ("01", "4", "others"), ("02", "6+12", "happiness"), ("02", "4+7", "disgust"),
            ("03", "1+2", "surprise"), ("03", "17", "repression")]
    path = write_labels(tmp_path / "labels.csv", rows)
    assert main(["eval", str(path), "--json", "--protocol", "5class", "--prototypes", "shipped"]) == 0
    method = json.loads(capsys.readouterr().out)["protocols"]["5class"]["methods"]["classifier-fixed"]
    assert "CASME II" in method["description"] and "not refitted" in method["description"]
    assert "3 datasets pooled" in method["description"] and method["prototypes"]["dataset"]
    own = tmp_path / "own.json"
    assert main(["fit-prototypes", str(path), "-o", str(own)]) == 0
    assert main(["eval", str(path), "--json", "--protocol", "5class", "--prototypes", str(own)]) == 0
    report = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after fit-prototypes' line
    assert any("training fit" in n for n in report["protocols"]["5class"]["notes"])
    assert main(["eval", str(path), "--prototypes", str(tmp_path / "none.json")]) == ExitCode.NO_INPUT
