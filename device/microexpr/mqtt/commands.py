"""Commands a device accepts over MQTT (Home Assistant switches/button, Node-RED).

``<base>/set/<name>`` carries the command; a switch's state is retained on
``<base>/state/<name>``. The payloads are Home Assistant's defaults (``ON`` /
``OFF`` for a switch, ``PRESS`` for a button), exactly: anything else —
another word, a wrong case, JSON, more than :data:`MAX_PAYLOAD` bytes, a
topic that names no command — is refused by :func:`parse_command`, which the
daemon logs (bounded) and counts, and nothing changes state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

#: Longer payloads are refused unread.
MAX_PAYLOAD = 16


class CommandName(StrEnum):
    """The closed set of commands."""

    #: switch: ON = pause the analysis (frames are read and dropped, counted), OFF = resume
    PAUSED = "paused"
    #: button: forget the resting face and learn it again from the next frames
    RECALIBRATE = "recalibrate"
    #: switch: the throttled AU stream on ``<base>/aus`` (``mqtt.aus_stream``)
    AUS_STREAM = "aus_stream"


#: Switches have a retained state; the button has none.
SWITCHES = frozenset({CommandName.PAUSED, CommandName.AUS_STREAM})
ON, OFF, PRESS = "ON", "OFF", "PRESS"


@dataclass(frozen=True, slots=True)
class Command:
    """One accepted command: ``value`` is True/False for a switch, True for the button."""

    name: CommandName
    value: bool


class CommandRejected(ValueError):
    """A command message that is not one we accept; the message says why (one line)."""


def parse_command(set_base: str, topic: str, payload: bytes) -> Command:
    """The command a message on ``<set_base>/<name>`` carries.

    Raises:
        CommandRejected: naming the topic and what is wrong with it.
    """
    prefix = f"{set_base}/"
    if not topic.startswith(prefix):
        raise CommandRejected(f"{topic}: not a command topic")
    try:
        name = CommandName(topic.removeprefix(prefix))
    except ValueError:
        known = ", ".join(c.value for c in CommandName)
        raise CommandRejected(f"{topic}: unknown command (known: {known})") from None
    if len(payload) > MAX_PAYLOAD:
        raise CommandRejected(f"{topic}: payload of {len(payload)} bytes (at most {MAX_PAYLOAD})")
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        raise CommandRejected(f"{topic}: payload is not ASCII text") from None
    if name in SWITCHES:
        if text not in (ON, OFF):
            raise CommandRejected(f"{topic}: payload must be {ON} or {OFF}, got {text!r}")
        return Command(name, text == ON)
    if text != PRESS:
        raise CommandRejected(f"{topic}: payload must be {PRESS}, got {text!r}")
    return Command(name, True)
