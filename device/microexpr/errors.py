"""One error model for the whole application.

Library code raises these exceptions; only ``cli.main`` turns them into a
one-line message on stderr and the process exit code below. Every message
names the key, path, topic or row that is wrong.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes (documented in README, "Exit codes").

    Values follow sysexits.h where one fits, so that systemd's
    ``RestartPreventExitStatus=78`` and shell scripts can tell them apart.
    """

    OK = 0
    FAILURE = 1  #: unexpected error (a bug): rerun with --traceback
    USAGE = 2  #: bad command line (argparse)
    NO_FACE = 3  #: the media holds no face at all
    DATA_ERROR = 65  #: input data is malformed: corrupt media, bad label file
    NO_INPUT = 66  #: input missing or unreadable: file, image folder, camera
    MODEL_UNAVAILABLE = 69  #: no model source could be reached / found
    SOFTWARE = 70  #: internal invariant broken
    CANT_CREATE = 73  #: the state location is read-only (mount or permission): not corruption
    IO_ERROR = 74  #: cannot write output / state
    TEMPORARY = 75  #: try again later (broker, API)
    MODEL_HASH_MISMATCH = 80  #: a model file whose sha256 is not the pinned one
    MODEL_TRUNCATED = 81  #: a model file shorter/longer than the pinned size
    CONFIG = 78  #: bad configuration: never restarted by systemd
    INTERRUPTED = 130  #: Ctrl-C / SIGINT (128 + 2, the shell's convention); ``run`` stops cleanly with 0 instead


class MicroexprError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(MicroexprError):
    """Invalid configuration; the message starts with the dotted key."""

    exit_code = ExitCode.CONFIG


class SourceError(MicroexprError):
    """A frame source cannot be opened or read (file, folder, camera)."""

    exit_code = ExitCode.NO_INPUT


class NoFaceError(MicroexprError):
    """The media was read but no face was found in any frame."""

    exit_code = ExitCode.NO_FACE


class ModelError(MicroexprError):
    """The model is missing, unverified or cannot be loaded."""

    exit_code = ExitCode.MODEL_UNAVAILABLE


class DataError(MicroexprError):
    """Malformed input data: a label file, a prototypes file, a schema."""

    exit_code = ExitCode.DATA_ERROR


class PublishError(MicroexprError):
    """An event could not be handed to the broker or the outbox."""

    exit_code = ExitCode.TEMPORARY
