"""Configuration: load → validate → resolve, secrets, check-config, reload plans."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from microexpr import config as cfg
from microexpr import secrets
from microexpr.cli import main
from microexpr.errors import ConfigError, ExitCode
from microexpr.models import FACE_LANDMARKER

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "provisioning" / "config.example.toml"
DOCS = ROOT / "docs" / "configuration.md"


@pytest.fixture
def write(tmp_path: Path):
    def _write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No systemd directories or secrets leaking in from the test runner."""
    for name in ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY", "MICROEXPR_MODELS_DIR",
                 "MICROEXPR_MQTT_PASSWORD", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------
# Defaults and resolution


def test_no_file_means_defaults(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": str(tmp_path / "state")}
    config = cfg.load_config(None, default_path=tmp_path / "absent.toml", env=env)
    assert config.device_id == cfg.hostname_device_id()
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", config.device_id)
    assert config.mqtt.client_id == f"microexpr-{config.device_id}"
    assert config.outbox.path == tmp_path / "state" / "outbox.sqlite"
    assert config.reasoner.queue_path == tmp_path / "state" / "reasoner.sqlite3"
    assert config.model.models_dir == tmp_path / "state" / "models"
    assert config.onnx.models_dir == tmp_path / "state" / "models" / "onnx"
    assert config.model.path is None
    assert config.reasoner.enabled is False
    assert config.mqtt.qos == 1 and config.mqtt.port == 1883
    assert config.topic_base() == f"microexpr/{config.device_id}"


def test_default_file_is_used_when_present(write, tmp_path: Path) -> None:
    path = write('device_id = "kiosk-1"\n[mqtt]\nport = 8883\n')
    config = cfg.load_config(None, default_path=path, env={"STATE_DIRECTORY": str(tmp_path)})
    assert config.device_id == "kiosk-1"
    assert config.mqtt.port == 8883
    assert config.mqtt.client_id == "microexpr-kiosk-1"


def test_user_state_dir_outside_systemd(clean_env: None, tmp_path: Path) -> None:
    from platformdirs import user_state_dir

    config = cfg.load_config(None, default_path=tmp_path / "absent.toml", env={})
    assert config.outbox.path == Path(user_state_dir("microexpr")) / "outbox.sqlite"


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [("Pi-Kitchen.local", "pi-kitchen"), ("My Box!", "my-box"), ("---", "microexpr"),
     ("lab_pi_02", "lab_pi_02"), ("x" * 80, "x" * 64)],
)
def test_hostname_device_id(hostname: str, expected: str) -> None:
    assert cfg.hostname_device_id(hostname) == expected


def test_relative_paths_are_taken_from_the_config_folder(write, tmp_path: Path) -> None:
    path = write('[outbox]\npath = "data/outbox.sqlite"\n[model]\nmodels_dir = "~/m"\n'
                 '[mqtt]\ntls = true\nca_file = "ca.pem"\n')
    config = cfg.load_config(path, env={})
    assert config.outbox.path == tmp_path / "data" / "outbox.sqlite"
    assert config.model.models_dir == Path("~/m").expanduser()
    assert config.mqtt.ca_file == tmp_path / "ca.pem"


def test_integers_are_accepted_for_numbers(write) -> None:
    config = cfg.load_config(write("[source]\nfps = 30\n[engine]\nmicro_max_s = 1\n"), env={})
    assert config.source.fps == 30.0 and isinstance(config.source.fps, float)
    assert config.engine.micro_max_s == 1.0


def test_log_level_is_case_insensitive(write) -> None:
    config = cfg.load_config(write('[logging]\nlevel = "DEBUG"\n'), env={})
    assert config.logging.level == "debug"
    assert config.log_level() == 10


# --------------------------------------------------------------------------
# The example file documents every key, with its default


def test_example_file_is_the_defaults(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": str(tmp_path)}
    from_example = cfg.load_config(EXAMPLE, env=env)
    defaults = cfg.load_config(None, default_path=tmp_path / "absent.toml", env=env)
    # but for source.uri: the installed example watches the first camera so the unit starts
    assert from_example.source.uri == "0" and defaults.source.uri == ""
    assert from_example.model_copy(update={"source": defaults.source}) == defaults


def test_example_file_names_every_key() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    present = {key for key, value in data.items() if not isinstance(value, dict)}
    present |= {f"{section}.{key}" for section, values in data.items() if isinstance(values, dict) for key in values}
    assert present == set(cfg.iter_keys())


def test_docs_name_every_key() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [key for key in cfg.iter_keys() if f"`{key}`" not in text]
    assert not missing, f"docs/configuration.md does not document: {missing}"


# --------------------------------------------------------------------------
# Bad input: one line, starting with the dotted key, exit 78

BAD = [
    ('[mqtt]\nport = "x"\n', 'mqtt.port: must be 1..65535, got "x"'),
    ("[mqtt]\nport = 70000\n", "mqtt.port: must be 1..65535, got 70000"),
    ("[mqtt]\nport = 0\n", "mqtt.port: must be 1..65535, got 0"),
    ('[mqtt]\nhots = "broker"\n', 'mqtt.hots: unknown key (did you mean "host"?)'),
    ("[mqtt]\nqos = true\n", "mqtt.qos: must be one of 0, 1, 2, got true"),
    ("[mqtt]\nqos = 3\n", "mqtt.qos: must be one of 0, 1, 2, got 3"),
    ('[mqtt]\npassword = "hunter2"\n', "mqtt.password: secrets are not read from the config file"),
    ('[reasoner]\napi_key = "sk-x"\n', "reasoner.api_key: secrets are not read from the config file"),
    ('[mqtt]\nca_file = "/etc/ssl/ca.pem"\n', "mqtt.ca_file: is set but mqtt.tls is false"),
    ('[mqtt]\ntls = true\ncert_file = "c.pem"\n', "mqtt.key_file: set mqtt.cert_file and mqtt.key_file together"),
    ('[mqtt]\ntopic_prefix = "a/#"\n', "mqtt.topic_prefix: must not contain MQTT wildcards"),
    ('[mqtt]\nhost = ""\n', "mqtt.host: must not be empty"),
    ("mqtt = 5\n", "mqtt: must be a table, got 5"),
    ("[mqt]\n", 'mqt: unknown key (did you mean "mqtt"?)'),
    ("[source]\nreconnect_initial_s = 10.0\nreconnect_max_s = 5.0\n",
     "source.reconnect_max_s: must be >= source.reconnect_initial_s (10), got 5"),
    ("[source]\nfps = -1\n", "source.fps: must be a number 0..1000, got -1"),
    ('[source]\nloop = "yes"\n', 'source.loop: must be true or false, got "yes"'),
    ("[source]\nwidth = 640.5\n", "source.width: must be 0..7680, got 640.5"),
    ("[engine]\nmicro_max_s = 0\n", "engine.micro_max_s: must be a number > 0 and <= 2, got 0"),
    ("[engine]\nambiguous_margin = 1.5\n", "engine.ambiguous_margin: must be a number 0..1, got 1.5"),
    ('[tracker]\nbackend = "tflite"\n', 'tracker.backend: must be one of "auto", "mediapipe", "onnx", got "tflite"'),
    ("[tracker]\nnum_faces = 5\n", "tracker.num_faces: must be 1..4, got 5"),
    ('[onnx]\nvariant = "int4"\n', 'onnx.variant: must be one of "fp32", "int8", got "int4"'),
    ('[outbox]\nwhen_full = "block"\n', 'outbox.when_full: must be one of "drop_oldest", "reject_new", got "block"'),
    ("[outbox]\nmax_events = 10\n", "outbox.max_events: must be 100..10000000, got 10"),
    ('[reasoner]\nbase_url = "localhost:8080"\n', 'reasoner.base_url: must be an http:// or https:// URL'),
    ("[reasoner]\ntimeout_s = 0\n", "reasoner.timeout_s: must be a number > 0 and <= 600, got 0"),
    ("[reasoner]\nenabled = 1\n", "reasoner.enabled: must be true or false, got 1"),
    ('[logging]\nlevel = "LOUD"\n', 'logging.level: must be one of "debug", "info", "warning", "error", got "LOUD"'),
    ('device_id = "Kitchen Pi"\n', 'device_id: must be 1-64 characters'),
    ("[model]\npath = 5\n", 'model.path: must be a path (or "" for the default), got 5'),
    ("[source]\nuri = 1979-05-27\n", "source.uri: must be a string, got a date/time (1979-05-27)"),
]


@pytest.mark.parametrize(("text", "starts"), BAD, ids=[b[1].split(":")[0] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_value_is_one_line_naming_the_key(write, text: str, starts: str) -> None:
    path = write(text)
    with pytest.raises(ConfigError) as exc:
        cfg.load_config(path, env={})
    message = str(exc.value)
    assert message.startswith(starts)
    assert "\n" not in message
    assert str(path) in message  # says which file
    assert exc.value.exit_code == ExitCode.CONFIG == 78


def test_several_problems_are_counted_and_all_listed(write, capsys: pytest.CaptureFixture[str]) -> None:
    path = write('[mqtt]\nport = "x"\nhots = 1\n[engine]\nmicro_max_s = 9\n')
    with pytest.raises(ConfigError, match=r"\(\+2 more; run `microexpr check-config`\)"):
        cfg.load_config(path, env={})
    assert main(["check-config", "--config", str(path)]) == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert sorted(line.split(": ")[2] for line in err) == ["engine.micro_max_s", "mqtt.hots", "mqtt.port"]


def test_toml_syntax_error_names_file_and_line(write) -> None:
    path = write('device_id = "a"\n\n[mqtt\nport = 1\n')
    with pytest.raises(ConfigError) as exc:
        cfg.load_config(path, env={})
    assert str(exc.value).startswith(f"{path}: line 3: ")


def test_duplicate_key_is_a_syntax_error(write) -> None:
    path = write("[mqtt]\nport = 1\nport = 2\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: line 3: "):
        cfg.load_config(path, env={})


def test_missing_explicit_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: no such configuration file$"):
        cfg.load_config(path, env={})


def test_a_byte_order_mark_is_not_a_syntax_error(write, tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + '[mqtt]\nport = 8883\n'.encode())
    assert cfg.load_config(path, env={"STATE_DIRECTORY": str(tmp_path)}).mqtt.port == 8883


def test_directory_and_binary_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        cfg.load_config(tmp_path, env={})
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'device_id = "a"\n\xff\xfe\n')
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(binary))}: line 2: not UTF-8 text$"):
        cfg.load_config(binary, env={})


@pytest.mark.parametrize(("text", "key"), [(BAD[0][0], "mqtt.port"), (BAD[6][0], "mqtt.password"),
                                           ("[mqtt\n", None)])
def test_cli_prints_one_line_and_exits_78(write, text: str, key: str | None) -> None:
    path = write(text)
    proc = subprocess.run([sys.executable, "-m", "microexpr", "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"microexpr: error: {key or path}")
    assert "Traceback" not in proc.stderr
    if key == "mqtt.password":
        assert "hunter2" not in proc.stderr  # the refused secret is not echoed
        assert "/etc/microexpr/credentials/mqtt_password" in lines[0]


# --------------------------------------------------------------------------
# Secrets


def test_secret_from_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "mqtt_password").write_text("s3cret \n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "MICROEXPR_MQTT_PASSWORD": "from-env"}
    assert secrets.read_secret("mqtt_password", "MICROEXPR_MQTT_PASSWORD", env=env) == "s3cret "
    assert secrets.source_of(secrets.MQTT_PASSWORD, env=env) is secrets.SecretSource.CREDENTIAL


def test_secret_falls_back_to_environment(tmp_path: Path) -> None:
    (tmp_path / "mqtt_password").write_text("")  # the install script's empty placeholder
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "OPENAI_API_KEY": "sk-env", "MICROEXPR_MQTT_PASSWORD": "pw"}
    assert secrets.read(secrets.OPENAI_API_KEY, env=env) == "sk-env"
    assert secrets.read(secrets.MQTT_PASSWORD, env=env) == "pw"
    assert secrets.source_of(secrets.MQTT_PASSWORD, env=env) is secrets.SecretSource.ENVIRONMENT


def test_unset_secret_is_none(tmp_path: Path) -> None:
    (tmp_path / "openai_api_key").write_text("\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert secrets.read(secrets.OPENAI_API_KEY, env=env) is None
    assert secrets.source_of(secrets.OPENAI_API_KEY, env={}) is None


def test_unreadable_credential_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "mqtt_password").mkdir()
    with pytest.raises(ConfigError, match="^credential mqtt_password: cannot read "):
        secrets.read(secrets.MQTT_PASSWORD, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    (tmp_path / "openai_api_key").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        secrets.read(secrets.OPENAI_API_KEY, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_loading_the_config_reads_no_secret(tmp_path: Path, write) -> None:
    # A credential that would raise if it were read: loading must not touch it.
    creds = tmp_path / "creds"
    (creds / "mqtt_password").mkdir(parents=True)
    path = write('[mqtt]\nusername = "u"\n')
    code = (
        "import microexpr.config as c, microexpr.secrets, pathlib, sys;"
        f"c.load_config(pathlib.Path({str(path)!r})); print('ok')"
    )
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(creds)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# --------------------------------------------------------------------------
# check-config


def test_check_config_prints_loadable_toml(write, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch, clean_env: None, model_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("MICROEXPR_MQTT_PASSWORD", "hunter2-do-not-print")
    path = write(f'device_id = "lab"\n[source]\nuri = "0"\n[model]\npath = "{model_path}"\n'
                 '[mqtt]\nusername = "cam"\nport = 8883\n[engine]\nambiguous_margin = 0.2\n')
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "#   mqtt_password: set (environment)" in out
    assert "#   openai_api_key: unset" in out
    # The printed text is TOML that resolves to the same configuration.
    printed = write(out, "printed.toml")
    assert cfg.load_config(printed) == cfg.load_config(path)


def test_check_config_json(write, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch, clean_env: None, model_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "openai_api_key").write_text("sk-very-secret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    models = tmp_path / "models"  # provisioned the way provision-model lays it out
    installed = FACE_LANDMARKER.install_path(models)
    installed.parent.mkdir(parents=True)
    shutil.copy(model_path, installed)
    path = write(f'[source]\nuri = "/dev/video0"\n[model]\nmodels_dir = "{models}"\n[reasoner]\nenabled = true\n[mqtt]\nusername = "u"\n')
    assert main(["check-config", "--config", str(path), "--json"]) == 0
    raw = capsys.readouterr().out
    assert "sk-very-secret" not in raw
    report = json.loads(raw)
    assert report["config_file"] == str(path)
    assert report["config"]["reasoner"]["enabled"] is True
    assert report["config"]["model"]["path"] == ""  # the provisioned one in models_dir
    assert report["refused"] == [] and report["as_service"] is False
    assert report["secrets"]["openai_api_key"] == {"set": True, "source": "credential", "env_var": "OPENAI_API_KEY"}
    assert report["secrets"]["mqtt_password"]["set"] is False
    assert any(note.startswith("mqtt.username is set but no MQTT password") for note in report["notes"])


def test_check_config_without_any_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in defaults name no source: ``run`` refuses them (78) without
    ``--source``, so check-config does too, and still prints the resolved view."""
    monkeypatch.setattr(cfg, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert main(["check-config", "--json"]) == 78
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["config_file"] is None
    assert report["config"]["mqtt"]["port"] == 1883
    assert report["refused"][0].startswith("source.uri: no source configured")
    assert captured.err.startswith("microexpr: error: source.uri: no source configured")


# --------------------------------------------------------------------------
# Reload (SIGHUP)


def test_reload_plan_splits_live_and_restart_keys(write, tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": str(tmp_path)}
    old = cfg.load_config(write('[source]\nuri = "0"\n'), env=env)
    new = cfg.load_config(write('[source]\nuri = "1"\n[engine]\nambiguous_margin = 0.3\n'
                                '[logging]\nlevel = "debug"\n[mqtt]\nport = 1884\nstats_interval_s = 5\n', "new.toml"),
                          env=env)
    plan = cfg.plan_reload(old, new)
    assert set(plan.live) == {"engine.ambiguous_margin", "logging.level", "mqtt.stats_interval_s"}
    assert set(plan.restart) == {"source.uri", "mqtt.port"}
    assert plan.sections() == {"engine", "logging", "mqtt"}
    eff = plan.effective
    assert eff.engine.ambiguous_margin == 0.3 and eff.logging.level == "debug" and eff.mqtt.stats_interval_s == 5
    assert eff.source.uri == "0" and eff.mqtt.port == 1883  # restart-only keys keep the running value
    assert cfg.plan_reload(old, old).changed is False


def test_every_engine_threshold_is_live() -> None:
    engine = {f"engine.{k}" for k in cfg.EngineConfig.model_fields}
    rebuild = {f"engine.{k}" for k in cfg.RESTART_ENGINE_KEYS}
    assert rebuild == {"engine.label_profile", "engine.prototypes"}
    assert engine - rebuild <= cfg.LIVE_KEYS and not rebuild & cfg.LIVE_KEYS
    assert not any(key.startswith(("source.", "model.", "tracker.")) for key in cfg.LIVE_KEYS)


def test_label_profile_and_prototypes_are_validated(tmp_path: Path) -> None:
    good = tmp_path / "p.json"
    good.write_text("{}", encoding="utf-8")
    assert cfg.EngineConfig(label_profile="casme2", prototypes=str(good)).prototypes == good
    assert cfg.EngineConfig(prototypes="").prototypes is None
    with pytest.raises(ValueError, match="label_profile"):
        cfg.EngineConfig(label_profile="samm")
    with pytest.raises(ValueError, match="no prototypes file"):
        cfg.EngineConfig(prototypes=str(tmp_path / "missing.json"))


def test_device_id_accepts_upper_case_like_the_mqtt_rule(tmp_path: Path) -> None:
    """``--device-id relA``: docs/mqtt.md and the topic rule allow upper case; so does the key."""
    from microexpr.mqtt import DEVICE_ID_PATTERN, Topics
    from microexpr.service import RunOptions, load_run_config

    config = load_run_config(RunOptions(source="0", device_id="relA", outbox=tmp_path / "o.sqlite"))
    assert config.device_id == "relA" and DEVICE_ID_PATTERN.match(config.device_id)
    assert Topics.build(config.mqtt.topic_prefix, config.device_id).event == "microexpr/relA/event"
    with pytest.raises(ConfigError, match="device_id"):
        load_run_config(RunOptions(source="0", device_id="rel/A", outbox=tmp_path / "o.sqlite"))
