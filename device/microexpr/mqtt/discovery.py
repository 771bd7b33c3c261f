"""Home Assistant MQTT discovery: the retained configs that make a device's entities appear.

One config per entity on ``<discovery_prefix>/<component>/<device_id>/<object_id>/config``
(Home Assistant's single-component discovery), every one with the same
``device`` block (so HA groups them), an ``origin`` block (what published
it), and the device's availability topic.

* ``event`` ``emotion_event``: the emotion as an MQTT *event* entity, whose
  ``event_types`` are the labels: two smiles in a row both fire (a sensor
  whose state stays "happiness" would not trigger an automation twice).
* ``sensor`` ``emotion``: the last label, ``device_class: enum`` with the
  labels as ``options`` (no unit or state class, as HA requires for enums);
  ``kind`` and ``stage`` are enums too.
* ``binary_sensor`` ``face``: a face is in view (``<base>/face``, retained).
* ``switch`` ``paused`` and ``aus_stream``, ``button`` ``recalibrate``:
  commands on ``<base>/set/<name>`` (:mod:`microexpr.mqtt.commands`), the
  switches' state retained on ``<base>/state/<name>``.
* diagnostic sensors from ``stats``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from microexpr import __version__
from microexpr.classify.decide import Stage
from microexpr.events import Availability, dumps
from microexpr.facs import Emotion
from microexpr.mqtt.commands import OFF, ON, PRESS, CommandName
from microexpr.mqtt.topics import Topics
from microexpr.spotting import EpisodeKind

#: What ``origin`` names: the software that published the discovery configs.
ORIGIN_NAME = "microexpr"
LABELS = [e.value for e in Emotion]

#: (component, object id, name, state topic attribute, value template, extra config)
_ENTITIES: tuple[tuple[str, str, str, str, str, Mapping[str, Any]], ...] = (
    ("sensor", "emotion", "Emotion", "event", "{{ value_json.emotion }}",
     {"icon": "mdi:emoticon-outline", "device_class": "enum", "options": LABELS}),
    (
        "sensor",
        "confidence",
        "Confidence",
        "event",
        "{{ (value_json.confidence * 100) | round(0) }}",
        {"unit_of_measurement": "%", "state_class": "measurement"},
    ),
    ("sensor", "kind", "Expression kind", "event", "{{ value_json.kind }}",
     {"device_class": "enum", "options": [k.value for k in EpisodeKind]}),
    ("sensor", "stage", "Deciding stage", "event", "{{ value_json.stage }}",
     {"entity_category": "diagnostic", "device_class": "enum",
      "options": [s.value for s in Stage if s is not Stage.LLM]}),
    (
        "sensor",
        "fps",
        "Frame rate",
        "stats",
        "{{ value_json.fps }}",
        {"unit_of_measurement": "fps", "state_class": "measurement", "entity_category": "diagnostic"},
    ),
    ("sensor", "health", "Health", "stats", "{{ value_json.health }}", {"entity_category": "diagnostic"}),
    (
        "sensor",
        "outbox",
        "Outbox depth",
        "stats",
        "{{ value_json.outbox.depth }}",
        {"state_class": "measurement", "entity_category": "diagnostic"},
    ),
    (
        "sensor",
        "uptime",
        "Uptime",
        "stats",
        "{{ value_json.uptime_s | round(0) }}",
        {"device_class": "duration", "unit_of_measurement": "s", "entity_category": "diagnostic"},
    ),
    (
        "sensor",
        "reasoner",
        "Reasoner",
        "stats",
        "{{ value_json.reasoner.state if value_json.reasoner else 'disabled' }}",
        {"entity_category": "diagnostic"},
    ),
)

#: The event entity: HA wants a JSON object with ``event_type`` (one of ``event_types``);
#: the other keys become the event's attributes.
EVENT_TEMPLATE = (
    "{{ {'event_type': value_json.emotion, 'event_id': value_json.event_id, "
    "'confidence': value_json.confidence, 'kind': value_json.kind, 'stage': value_json.stage, "
    "'ambiguous': value_json.ambiguous, 'aus': value_json.aus | map(attribute='au') | list, "
    "'explanation': value_json.explanation} | tojson }}"
)


def discovery_messages(topics: Topics, device_id: str, *, sw_version: str = __version__) -> dict[str, str]:
    """Retained Home Assistant MQTT discovery configs: ``{topic: JSON}``."""
    device = {
        "identifiers": [f"microexpr_{device_id}"],
        "name": f"microexpr {device_id}",
        "manufacturer": "microexpr",
        "model": "micro-expression sensor",
        "sw_version": sw_version,
    }
    origin = {"name": ORIGIN_NAME, "sw_version": sw_version}

    def common(object_id: str, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "unique_id": f"microexpr_{device_id}_{object_id}",
            "availability_topic": topics.availability,
            "payload_available": Availability.ONLINE.value,
            "payload_not_available": Availability.OFFLINE.value,
            "has_entity_name": True,
            "device": device,
            "origin": origin,
        }

    configs: dict[tuple[str, str], dict[str, Any]] = {}
    for component, object_id, name, source, template, extra in _ENTITIES:
        config = common(object_id, name) | {
            "state_topic": topics.event if source == "event" else topics.stats,
            "value_template": template,
            **extra,
        }
        if object_id == "emotion":
            config["json_attributes_topic"] = topics.event
            config["json_attributes_template"] = (
                "{{ {'event_id': value_json.event_id, 'confidence': value_json.confidence, "
                "'stage': value_json.stage, 'aus': value_json.aus | map(attribute='au') | list, "
                "'explanation': value_json.explanation} | tojson }}"
            )
        configs[(component, object_id)] = config
    configs[("event", "emotion_event")] = common("emotion_event", "Expression") | {
        "state_topic": topics.event,
        "event_types": LABELS,
        "value_template": EVENT_TEMPLATE,
        "icon": "mdi:emoticon-outline",
    }
    configs[("binary_sensor", "face")] = common("face", "Face present") | {
        "state_topic": topics.face,
        "payload_on": ON,
        "payload_off": OFF,
        "device_class": "occupancy",
    }
    for command, name, icon in ((CommandName.PAUSED, "Paused", "mdi:pause"),
                                (CommandName.AUS_STREAM, "AU stream", "mdi:chart-bar")):
        configs[("switch", command.value)] = common(command.value, name) | {
            "command_topic": topics.command(command.value),
            "state_topic": topics.state(command.value),
            "payload_on": ON,
            "payload_off": OFF,
            "icon": icon,
            "entity_category": "config",
        }
    configs[("button", CommandName.RECALIBRATE.value)] = common(CommandName.RECALIBRATE.value,
                                                               "Recalibrate resting face") | {
        "command_topic": topics.command(CommandName.RECALIBRATE.value),
        "payload_press": PRESS,
        "icon": "mdi:face-recognition",
        "entity_category": "config",
    }
    return {
        f"{topics.discovery_prefix}/{component}/{device_id}/{object_id}/config": dumps(config)
        for (component, object_id), config in configs.items()
    }
