"""journald's native protocol written by hand (no systemd-python, no compiler).

A real AF_UNIX datagram socket stands in for /run/systemd/journal/socket;
the test decodes what journald would receive, including the binary-safe form
of a multi-line value, and checks that a record that cannot be sent is
written to stderr and counted, not lost. Also: the optional packages
(onnxruntime, openai) missing gives a one-line configuration error.
"""

from __future__ import annotations

import logging
import socket
import struct
import sys
from pathlib import Path

import pytest

from microexpr.errors import ConfigError, ExitCode
from microexpr.journal import JournalHandler


def _decode(payload: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    i = 0
    while i < len(payload):
        nl = payload.index(b"\n", i)
        line = payload[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            fields[key.decode()] = value.decode()
            i = nl + 1
        else:  # KEY\n <u64 le length> <bytes> \n
            (length,) = struct.unpack("<Q", payload[nl + 1:nl + 9])
            start = nl + 9
            fields[line.decode()] = payload[start:start + length].decode()
            assert payload[start + length:start + length + 1] == b"\n"
            i = start + length + 1
    return fields


@pytest.fixture()
def journal(tmp_path: Path):
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    yield path, server
    server.close()


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger("microexpr.test_journal")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_record_arrives_with_fields(journal) -> None:
    path, server = journal
    handler = JournalHandler("microexpr", path=path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = _logger(handler)
    log.warning("episode %s dropped", "e-1", extra={"MICROEXPR_EVENT_ID": "e-1", "lower": "ignored"})
    fields = _decode(server.recv(65536))
    assert fields["MESSAGE"] == "episode e-1 dropped"
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "microexpr"
    assert fields["MICROEXPR_EVENT_ID"] == "e-1"
    assert fields["LOGGER"] == "microexpr.test_journal"
    assert fields["CODE_FUNC"] == "test_record_arrives_with_fields"
    assert "lower" not in fields
    log.error("line one\nline two")
    fields = _decode(server.recv(65536))
    assert fields["MESSAGE"] == "line one\nline two" and fields["PRIORITY"] == "3"
    assert handler.fallbacks == 0
    handler.close()


def test_unsendable_record_goes_to_stderr_and_is_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    handler = JournalHandler("microexpr", path=str(tmp_path / "no-journald.sock"))
    handler.setFormatter(logging.Formatter("%(message)s"))
    _logger(handler).error("kept anyway")
    assert handler.fallbacks == 1
    assert "<3>kept anyway" in capsys.readouterr().err
    handler.close()


def test_missing_onnxruntime_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from microexpr.tracking import onnx

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    with pytest.raises(ConfigError, match="needs onnxruntime") as info:
        onnx._session(b"", 1, "test")
    assert info.value.exit_code == ExitCode.CONFIG


def test_missing_openai_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from microexpr.commands.evaluate import _reasoner

    monkeypatch.setitem(sys.modules, "openai", None)
    for name in [m for m in sys.modules if m == "microexpr.reasoner" or m.startswith("microexpr.reasoner.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ConfigError, match="needs the openai package") as info:
        _reasoner(type("Args", (), {"config": None})())
    assert info.value.exit_code == ExitCode.CONFIG
