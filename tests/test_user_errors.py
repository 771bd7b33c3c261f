"""What a new or hostile user runs into, through the real command line:
flags where people put them, source specs of the wrong kind, bad
``provision-model --onnx`` sources, benchmark inputs that cannot give a
report, options that would be silently ignored, a clip without a face, and
``[engine]`` values on SIGHUP that must not replace the running ones.

Each case is one line on stderr with the documented exit code (README,
"Exit codes"), never a traceback unless ``--traceback`` asks for one.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.broker import wait_until

from microexpr.cli import build_parser, main
from microexpr.config import Config
from microexpr.errors import ExitCode
from microexpr.health import Health
from microexpr.pipeline import Pipeline, PipelineConfig
from microexpr.service import RunOptions, Service, load_run_config
from microexpr.spotting import SpotterConfig

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 90.0  # generous: a shared, busy machine; never a limit on speed


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("microexpr")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------
# -v / --traceback after the command


def test_traceback_and_verbose_are_accepted_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The one-line error says "rerun with --traceback"; people append it to the
    command they ran. That used to be "unrecognized arguments" (exit 2)."""
    missing = tmp_path / "labels.csv"
    assert main(["eval", str(missing), "--traceback"]) == ExitCode.NO_INPUT
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("microexpr: error: ")
    assert main(["eval", str(missing)]) == ExitCode.NO_INPUT
    assert _one_error_line(capsys.readouterr().err).endswith("label file not found")

    parse = build_parser().parse_args
    assert parse(["check-config", "-v"]).verbose is True
    assert parse(["check-config", "--verbose", "--traceback"]).traceback is True
    # Given before the command, not undone by the command's own (unset) copy.
    assert parse(["-v", "--traceback", "check-config"]).verbose is True
    assert parse(["--traceback", "check-config"]).traceback is True
    assert parse(["check-config"]).verbose is False and parse(["check-config"]).traceback is False


# --------------------------------------------------------------------------
# Source specs of the wrong kind


@pytest.mark.parametrize(
    ("spec", "code", "says"),
    [
        ("replay:", ExitCode.USAGE, "replay: names no file"),
        ("replay:{folder}", ExitCode.NO_INPUT, "is a folder; replay:FILE plays a video file"),
        ("http://camera.invalid/stream.mp4", ExitCode.NO_INPUT, "URLs are not a frame source"),
        ("picamera2:x", ExitCode.NO_INPUT, "picamera2 or picamera2:N"),
    ],
)
def test_run_source_of_the_wrong_kind_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, code: ExitCode, says: str
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    spec = spec.format(folder=folder)
    assert main(["run", "--source", spec, "--outbox", str(tmp_path / "outbox.sqlite")]) == code
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert says in line, line
    if spec.startswith("http"):
        assert spec in line  # the user's own spelling, not "http:/camera.invalid/..."
    assert captured.out == ""
    assert not (tmp_path / "outbox.sqlite").exists()  # refused before anything was opened


# --------------------------------------------------------------------------
# provision-model --onnx with a bad --source


@pytest.mark.parametrize(
    ("source", "code", "says"),
    [
        ("http://127.0.0.1:9/onnx", ExitCode.USAGE, "not a URL"),
        ("{tmp}/missing", ExitCode.MODEL_UNAVAILABLE, "no such folder"),
        ("{tmp}/empty", ExitCode.MODEL_UNAVAILABLE, "no manifest.json in this folder"),
        ("{tmp}/file.onnx", ExitCode.MODEL_UNAVAILABLE, "not a folder"),
    ],
)
def test_provision_onnx_bad_source_names_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, code: ExitCode, says: str
) -> None:
    """It used to advise "run `microexpr provision-model --onnx`" (the command
    that had just failed) and showed a URL as a mangled path."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.onnx").write_bytes(b"not a folder")
    models = tmp_path / "models"
    source = source.format(tmp=tmp_path)
    assert main(["provision-model", "--onnx", "--source", source, "--dir", str(models)]) == code
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("microexpr: error: --source ") and says in line, line
    assert "run `microexpr provision-model" not in line
    assert not models.exists()


def test_provision_onnx_refuses_mirror(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--mirror was silently ignored with --onnx (the files never come from a mirror)."""
    models = tmp_path / "models"
    assert main(["provision-model", "--onnx", "--mirror", str(tmp_path), "--dir", str(models)]) == ExitCode.USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert "--mirror" in line and "--onnx" in line, line
    assert not models.exists()


# --------------------------------------------------------------------------
# bench: inputs that cannot give a report


def test_bench_refuses_one_image_and_a_folder_it_cannot_replay(
    tmp_path: Path, media_dir: Path, model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One frame gave a report of NaNs; an image folder ran the whole
    in-process part and then failed in the daemon soak (replay: plays videos)."""
    out = tmp_path / "results"
    image = media_dir / "single_face.jpg"
    assert main(["bench", "--source", str(image), "--model", str(model_path), "--out", str(out)]) == ExitCode.USAGE
    assert "1 frame" in _one_error_line(capsys.readouterr().err)

    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).symlink_to(image)
    assert main(["bench", "--source", str(folder), "--model", str(model_path), "--out", str(out)]) == ExitCode.USAGE
    assert "--daemon-seconds 0" in _one_error_line(capsys.readouterr().err)
    assert not list(out.rglob("bench*.json"))  # nothing measured, nothing written


# --------------------------------------------------------------------------
# eval --config without --reasoner


def test_eval_says_when_config_is_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("subject,filename,onset,apex,offset,aus,emotion\n"
                      "1,a,1,2,3,6+12,happiness\n2,b,1,2,3,6+12,happiness\n3,c,1,2,3,1+2+5,surprise\n"
                      "4,d,1,2,3,1+2+26,surprise\n")
    config = tmp_path / "site.toml"
    config.write_text("[engine]\nambiguous_confidence = 0.9\n")
    assert main(["eval", str(labels), "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "is read only with --reasoner" in captured.err and str(config) in captured.err
    assert "accuracy" in captured.out.lower()
    assert main(["eval", str(labels)]) == 0
    assert "--reasoner" not in capsys.readouterr().err


# --------------------------------------------------------------------------
# run on a clip without a face


def test_run_on_media_without_a_face_says_so(tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 0 (an empty scene is no error for the daemon), but not in silence."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.png"), np.full((240, 320, 3), 40 * i, np.uint8))
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\npath = "{model_path}"\n[mqtt]\nenabled = false\n'
                      f'[outbox]\npath = "{tmp_path / "outbox.sqlite"}"\n')
    assert main(["run", "--config", str(config), "--source", str(frames)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no face in any of the 3 frame(s)" in captured.err
    assert "3 frame(s), 0 with a face, 0 event(s)" in captured.err


# --------------------------------------------------------------------------
# SIGHUP: [engine] values that are refused keep the running ones


def _write(path: Path, clip: Path, model: Path, tmp: Path, *, micro_max_s: float, stats_s: float = 10.0) -> None:
    path.write_text(
        'device_id = "qa-reload"\n'
        f'[source]\nuri = "replay:{clip}"\n'
        f'[model]\npath = "{model}"\n'
        f"[mqtt]\nenabled = false\nstats_interval_s = {stats_s}\n"
        f'[outbox]\npath = "{tmp / "outbox.sqlite"}"\n'
        f"[engine]\nmicro_max_s = {micro_max_s}\n"
    )


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in list(caplog.records))


def test_reload_refused_engine_values_keep_the_running_ones(
    tmp_path: Path, smile_clip: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An out-of-range value in the file: the whole file is refused, logged,
    nothing changes. A value the file allows but this pipeline refuses (its
    spotter caps episodes at 1 s, so micro_max_s 1.5 cannot be): logged, the
    running value kept in the pipeline *and* in the configuration the next
    reload compares against, the other live keys still applied."""
    caplog.set_level(logging.INFO)
    path = tmp_path / "config.toml"
    _write(path, smile_clip, model_path, tmp_path, micro_max_s=0.5)
    options = RunOptions(config_path=path)
    built: list[Pipeline] = []

    def factory(config: Config) -> Pipeline:
        pipeline = Pipeline.create(
            model_path=model_path, config=PipelineConfig(spotter=SpotterConfig(max_episode_s=1.0)),
            micro_max_s=config.engine.micro_max_s,
        )
        built.append(pipeline)
        return pipeline

    service = Service(load_run_config(options), config_loader=lambda: load_run_config(options), pipeline_factory=factory)
    outcome: list[int] = []
    runner = threading.Thread(target=lambda: outcome.append(service.run(install_signals=False)), name="service-under-test")
    runner.start()
    try:
        wait_until(lambda: service.health.value is Health.OK, WAIT_S, "the first frame")
        (pipeline,) = built

        _write(path, smile_clip, model_path, tmp_path, micro_max_s=7.0)
        service.request_reload()
        wait_until(lambda: _logged(caplog, "keeping the running configuration"), WAIT_S, "the refused file logged")
        assert _logged(caplog, "engine.micro_max_s: must be a number > 0 and <= 2, got 7")
        assert service.config.engine.micro_max_s == 0.5
        assert pipeline.config.spotter.micro_max_s == 0.5

        _write(path, smile_clip, model_path, tmp_path, micro_max_s=1.5, stats_s=2.0)
        service.request_reload()
        wait_until(lambda: _logged(caplog, "reload: engine settings not applied"), WAIT_S, "the refused engine logged")
        wait_until(lambda: _logged(caplog, "reload: applied"), WAIT_S, "the other live key applied")
        applied = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reload: applied")]
        assert applied == ["reload: applied mqtt.stats_interval_s"], applied
        assert service.config.engine.micro_max_s == 0.5  # what runs, not what was refused
        assert service.config.mqtt.stats_interval_s == 2.0
        frames = service.metrics.frames
        wait_until(lambda: service.metrics.frames > frames + 3, WAIT_S, "frames after the reload")
        assert pipeline.config.spotter.micro_max_s == 0.5

        # A value it accepts is applied: compared against 0.5, so it is a change.
        _write(path, smile_clip, model_path, tmp_path, micro_max_s=0.4, stats_s=2.0)
        service.request_reload()
        wait_until(lambda: _logged(caplog, "reload: applied engine.micro_max_s"), WAIT_S, "the engine reload")
        wait_until(lambda: pipeline.config.spotter.micro_max_s == 0.4, WAIT_S, "the analysis to take 0.4")
        assert service.config.engine.micro_max_s == 0.4
    finally:
        service.request_stop("test")
        runner.join(WAIT_S)
    assert not runner.is_alive() and outcome == [0]
