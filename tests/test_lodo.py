"""Leave-one-dataset-out evaluation, label harmonisation, pooled prototypes, profiles."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fixtures.labels import write_labels
from fixtures.openai_server import OpenAIServer, Reply

from microexpr import harmonise, lodo
from microexpr.classify.decide import Classifier
from microexpr.classify.profiles import PROFILES, get_profile
from microexpr.classify.prototypes import PrototypeSet
from microexpr.cli import main
from microexpr.errors import DataError, ExitCode
from microexpr.facs import Emotion
from microexpr.labels import parse_aus, read_labels
from microexpr.pipeline import default_classifier


def _three(tmp_path: Path) -> list[Path]:
    a = write_labels(tmp_path / "a.csv", [
        ("1", "12", "happiness"), ("1", "4", "others"), ("2", "6+12", "happiness"), ("2", "4+7", "disgust"),
        ("3", "1+2", "surprise"), ("3", "17", "repression"), ("4", "9", "disgust"), ("4", "1+2+5", "surprise")])
    b = write_labels(tmp_path / "b.csv", [
        ("s1", "12", "happy"), ("s1", "4+5+7+23", "anger"), ("s2", "1+2+26", "surprise"), ("s2", "9+10", "disgust"),
        ("s3", "1+4+15", "sad"), ("s3", "4+7+23", "anger")])
    c = write_labels(tmp_path / "c.csv", [
        ("x", "6+12", "happiness"), ("x", "10", "disgust"), ("y", "5+26", "surprise"), ("y", "20", "fear"),
        ("z", "1+2+4+20", "fear"), ("z", "12", "happiness")])
    return [a, b, c]


# --- harmonisation -------------------------------------------------------------------


def test_harmonise_maps_or_leaves_out_by_the_scored_tables_labels(tmp_path: Path) -> None:
    rows = read_labels(_three(tmp_path)[1]).checked().rows  # anger, happiness, surprise, disgust, sadness
    with_others = harmonise.harmonise(rows, (Emotion.HAPPINESS, Emotion.DISGUST, Emotion.OTHERS))
    assert with_others.mapped == {"anger->others": 2}
    assert with_others.left_out == {"sadness": 1, "surprise": 1}
    assert [r.emotion for r in with_others.rows].count(Emotion.OTHERS) == 2
    without = harmonise.harmonise(rows, (Emotion.HAPPINESS, Emotion.DISGUST))
    assert without.mapped == {} and without.left_out == {"anger": 2, "sadness": 1, "surprise": 1}
    text = "\n".join(harmonise.describe())
    assert "`sad` → sadness" in text and "`repression` where the scored table has no such label → `others`" in text


def test_fingerprint_is_the_rows_not_the_file(casme2_csv: Path, casme2_xlsx: Path, tmp_path: Path) -> None:
    csv_table, xlsx_table = read_labels(casme2_csv), read_labels(casme2_xlsx)
    assert csv_table.sha256 != xlsx_table.sha256
    assert harmonise.table_fingerprint(csv_table) == harmonise.table_fingerprint(xlsx_table)
    a, b, _c = _three(tmp_path)
    assert harmonise.table_fingerprint(read_labels(a)) != harmonise.table_fingerprint(read_labels(b))
    # A row this reader cannot parse still counts (by its text): a reader
    # that learns the notation later gives the same fingerprint.
    rows = [("1", "12", "happiness"), ("2", "9", "disgust")]
    plain = harmonise.table_fingerprint(read_labels(write_labels(tmp_path / "p.csv", rows)))
    odd = harmonise.table_fingerprint(read_labels(write_labels(tmp_path / "o.csv", [*rows, ("3", "12+", "happiness")])))
    assert odd != plain


# --- pooled prototypes ---------------------------------------------------------------


def test_pool_weights_datasets_equally_and_finds_contested_configurations() -> None:
    def fit(spec: list[tuple[str, str, int]]) -> PrototypeSet:
        return PrototypeSet.fit([(parse_aus(aus).readings(), Emotion(label)) for aus, label, n in spec
                                 for _ in range(n)])

    big = fit([("4", "disgust", 30), ("12", "happiness", 30)])
    small = fit([("4", "others", 6), ("12", "happiness", 4)])
    pooled = PrototypeSet.pool([("big", "f1", big), ("small", "f2", small)])
    mean = (60 + 10) / 2  # each row of a dataset counts mean / its size
    assert pooled.classes[Emotion.DISGUST].count == pytest.approx(30 * mean / 60)
    assert pooled.classes[Emotion.OTHERS].count == pytest.approx(6 * mean / 10)
    assert pooled.total == pytest.approx(2 * (60 + 10) / 2)  # both datasets weigh the mean size
    assert pooled.contest(("4",)) is not None and "big: disgust 30" in pooled.contest(("4",))
    assert pooled.contest(("12",)) is None
    decision = Classifier(pooled).classify(parse_aus("4").readings()[0])
    assert decision.ambiguous and any(line.startswith("contested: the datasets label AU4") for line in decision.trace)
    alone = pooled.without("f2")
    assert alone is not None and alone.provenance["left_out"] == ["small"] and len(alone.components) == 1
    assert pooled.without("nope") is pooled
    by_file = PrototypeSet.pool([("big", "f1", big), ("small", "f2", PrototypeSet(
        small.classes, small.m, {"sha256": "abc"}))]).without("other-rows", "abc")
    assert by_file is not None and [c.name for c in by_file.components] == ["big"]
    # the file round-trips with its datasets
    again = PrototypeSet.from_json(json.loads(json.dumps(pooled.to_json())))
    assert [c.name for c in again.components] == ["big", "small"]
    assert again.contested.keys() == pooled.contested.keys()


def test_facs_conflict_takes_the_facs_label_and_is_ambiguous() -> None:
    """AU4+AU7 is disgust in CASME II and MMEW, the anger brow and lids in
    FACS: the shipped pool says anger, marked for the reasoner."""
    decision = Classifier().classify(parse_aus("4+7").readings()[0])
    assert decision.label is Emotion.ANGER and decision.ambiguous
    assert any("while the pooled datasets say disgust" in line for line in decision.trace)
    # The CASME II profile reproduces CASME II's convention instead.
    casme2 = get_profile("casme2").classifier()
    assert casme2.classify(parse_aus("4+7").readings()[0]).label is Emotion.DISGUST


# --- profiles ------------------------------------------------------------------------


def test_profiles_select_labels_and_prototypes(tmp_path: Path) -> None:
    assert set(PROFILES) == {"generic", "casme2"}
    generic = default_classifier()
    casme2 = default_classifier(label_profile="casme2")
    assert isinstance(generic, Classifier) and isinstance(casme2, Classifier)
    assert set(generic.labels) == set(Emotion)
    assert casme2.labels == tuple(e for e in Emotion if e in PROFILES["casme2"].labels)
    assert len(generic.prototypes.components) == 3 and not casme2.prototypes.components
    a = _three(tmp_path)[0]
    own = tmp_path / "own.json"
    assert main(["fit-prototypes", str(a), "-o", str(own)]) == 0
    mine = default_classifier(label_profile="casme2", prototypes=own)
    assert mine.prototypes.provenance["file"] == "a.csv"
    with pytest.raises(DataError):
        get_profile("samm")


# --- the command ---------------------------------------------------------------------


def test_eval_several_tables_scores_each_without_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _three(tmp_path)
    pooled = tmp_path / "pooled.json"
    assert main(["fit-prototypes", *map(str, paths), "-o", str(pooled)]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["eval", *map(str, paths), "--prototypes", str(pooled), "--json", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == lodo.SCHEMA and len(report["results"]) == 3
    assert (out / "eval.json").is_file() and "Label harmonisation" in (out / "eval.md").read_text(encoding="utf-8")
    for result in report["results"]:
        shipped = result["methods"]["shipped"]
        assert shipped["left_out"] == [result["dataset"]]  # nothing fitted on the scored table
        assert result["dataset"] not in shipped["datasets"]
        assert set(result["methods"]) == set(lodo.METHODS)
        assert 0.0 <= shipped["ambiguous_share"] <= 1.0 and "accuracy_confident" in shipped
        assert "lodo_optimistic_accuracy" in result["ceilings"]
    b = next(r for r in report["results"] if r["dataset"] == "b.csv")
    assert "others" not in b["labels"]  # b cannot produce others: never predicted there
    a = next(r for r in report["results"] if r["dataset"] == "a.csv")
    assert a["training"]["b.csv"]["mapped"] == {"anger->others": 2}


def test_eval_several_tables_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = _three(tmp_path)
    odd = write_labels(tmp_path / "odd.csv", [("1", "12", "happiness"), ("1", "4", "bewildered"),
                                              ("2", "9", "disgust"), ("2", "12+", "happiness")])
    assert main(["eval", str(a), str(odd), "--json"]) == 0  # odd rows are per-row notes, not a refusal
    report = json.loads(capsys.readouterr().out)
    notes = next(r for r in report["results"] if r["dataset"] == "odd.csv")["notes"]
    assert any("row 3" in n and "unknown emotion" in n for n in notes)
    assert any("row 5" in n and "12+" in n for n in notes)
    descriptors = write_labels(tmp_path / "blink.csv", [("1", "12", "happiness"), ("1", "blink", "disgust"),
                                                        ("2", "9+soft focus", "disgust")])
    assert main(["eval", str(a), str(descriptors), "--json"]) == 0  # a descriptor-only row is a note
    report = json.loads(capsys.readouterr().out)
    entry = next(d for d in report["datasets"] if d["name"] == "blink.csv")
    assert entry["rows"] == 2
    assert any("row 3" in n and "no facial Action Unit" in n and "blink" in n for n in entry["notes"])
    only_repression = write_labels(tmp_path / "rep.csv", [("1", "17", "repression"), ("2", "15", "repression")])
    assert main(["eval", str(a), str(only_repression), "--protocol", "samm5"]) == ExitCode.DATA_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no label in common with protocol samm5" in err[0]
    assert main(["eval", str(a), str(a)]) == ExitCode.USAGE
    assert "the same rows" in capsys.readouterr().err
    assert main(["eval", str(a), str(b), "--strict"]) == ExitCode.USAGE
    assert main(["eval", str(a), str(tmp_path / "none.csv")]) == ExitCode.NO_INPUT
    del c


def test_lodo_on_the_shared_tables_never_scores_a_table_with_itself(shared_dir: Path) -> None:
    labels = shared_dir / "data" / "labels"
    tables = [read_labels(labels / n) for n in ("casme2_coding.csv", "casme3_partA_coding.csv",
                                                 "mmew_micro_coding.csv")]
    shipped = PrototypeSet.load_default()
    report = lodo.run_lodo(tables, ["all"], shipped=shipped, shipped_name="packaged")
    fingerprints = {d.name: d.fingerprint for d in report.datasets}
    names = {c.fingerprint: c.name for c in shipped.components}
    assert set(fingerprints.values()) == set(names)  # the shipped pool is exactly these three tables
    for result in report.results:
        used = result.methods["shipped"].extra["datasets"]
        assert names[fingerprints[result.dataset.name]] not in used and len(used) == 2
        if Emotion.OTHERS not in result.labels:
            assert result.methods["shipped"].scores.per_class and all(
                c.label is not Emotion.OTHERS for c in result.methods["shipped"].scores.per_class)
    casme3 = next(r for r in report.results if r.dataset.name == "casme3_partA_coding.csv")
    assert any("B28" in n for n in casme3.notes) or len(casme3.rows) == 687


def test_a_configuration_neither_rules_nor_data_know_is_ambiguous() -> None:
    """No FACS pattern among the labels (no "others" either) and never seen
    in the fitted data: the AU-by-AU guess is not a confident decision."""
    protos = PrototypeSet.fit([(parse_aus(aus).readings(), Emotion(label)) for aus, label in
                               (("1+2+5", "surprise"), ("5+38", "surprise"), ("9", "disgust"), ("10", "disgust"))])
    labels = (Emotion.SURPRISE, Emotion.DISGUST)
    decision = Classifier(protos, labels=labels, ambiguous_confidence=0.0, ambiguous_margin=0.0).classify(
        parse_aus("38").readings()[0])
    assert decision.label in labels and decision.ambiguous
    assert any("neither a FACS pattern nor the fitted data" in line for line in decision.trace)
    seen = Classifier(protos, labels=labels, ambiguous_confidence=0.0, ambiguous_margin=0.0).classify(
        parse_aus("5+38").readings()[0])
    assert not seen.ambiguous  # seen in the data: the usual thresholds decide


def test_single_table_eval_leaves_its_own_dataset_out_of_the_shipped_pool(
        casme2_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(casme2_csv), "--protocol", "5class", "--prototypes", "shipped", "--json"]) == 0
    protocol = json.loads(capsys.readouterr().out)["protocols"]["5class"]
    fixed = protocol["methods"]["classifier-fixed"]
    assert any("component fitted on this very table is left out" in n for n in protocol["notes"])
    assert "2 datasets pooled" in fixed["description"] and "CASME II" not in fixed["description"]
    assert not any("training fit" in n for n in protocol["notes"])


def _reasoner_config(tmp_path: Path, server: OpenAIServer, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text("[reasoner]\n"
                    f'base_url = "{server.base_url}"\n'
                    f'queue_path = "{tmp_path / "eval-reasoner.sqlite3"}"\n'
                    "max_requests_per_minute = 10000\n" + extra)
    return path


def test_eval_several_tables_with_the_reasoner(openai_server: OpenAIServer, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11 item 5: each table's ambiguous shipped decisions go to a local
    OpenAI-API server; what it answers (when a label of that table) is scored
    as shipped+reasoner."""
    tables = _three(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-eval")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)

    def echo_local_label(body: dict[str, Any]) -> Reply:
        first = re.search(r"found ambiguous\):\n- (\w+):", body["messages"][1]["content"])
        assert first is not None
        return Reply.answer(label=first.group(1), aus_cited=())

    openai_server.default = echo_local_label
    config = _reasoner_config(tmp_path, openai_server)
    assert main(["eval", *map(str, tables), "--reasoner", "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "--reasoner" in report["command"]
    sent = 0
    for result in report["results"]:
        local, refined = result["methods"]["shipped"], result["methods"]["shipped+reasoner"]
        assert refined["sent"] == local["ambiguous"] and refined["refined"] == local["ambiguous"]
        # The model agreed with every local label: the scores must not move.
        assert (refined["accuracy"], refined["uf1"]) == (local["accuracy"], local["uf1"])
        sent += refined["sent"]
    assert sent > 0 and 1 <= len(openai_server.chat_requests()) <= sent

    # A model that always answers "surprise": every ambiguous row of a table with
    # a surprise label is now predicted surprise.
    openai_server.default = lambda body: Reply.answer(label="surprise", aus_cited=())
    (tmp_path / "second").mkdir()
    config = _reasoner_config(tmp_path / "second", openai_server)  # a fresh cache
    assert main(["eval", *map(str, tables), "--reasoner", "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    changed = 0
    for result in report["results"]:
        refined = result["methods"]["shipped+reasoner"]
        labels = refined["confusion"]["labels"]
        if "surprise" not in labels:
            assert refined["refined"] == 0  # not a label of this table: the local label stays
            continue
        column = labels.index("surprise")
        predicted_surprise = sum(row[column] for row in refined["confusion"]["rows_true_columns_predicted"])
        assert refined["refined"] == refined["sent"] and predicted_surprise >= refined["sent"]
        changed += refined["refined"]
    assert changed > 0


def test_eval_several_tables_reasoner_bad_config_is_exit_78(openai_server: OpenAIServer, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    a, b, _c = _three(tmp_path)
    config = _reasoner_config(tmp_path, openai_server, "concurrency = 0\n")
    assert main(["eval", str(a), str(b), "--reasoner", "--config", str(config)]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("microexpr: error: reasoner.concurrency")
    assert openai_server.chat_requests() == []
