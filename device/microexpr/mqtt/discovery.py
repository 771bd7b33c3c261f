"""Home Assistant MQTT discovery: the retained configs that make a device's sensors appear."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from microexpr import __version__
from microexpr.events import Availability, dumps
from microexpr.mqtt.topics import Topics

#: (object id, name, state topic attribute, value template, extra config)
_SENSORS: tuple[tuple[str, str, str, str, Mapping[str, Any]], ...] = (
    ("emotion", "Emotion", "event", "{{ value_json.emotion }}", {"icon": "mdi:emoticon-outline"}),
    (
        "confidence",
        "Confidence",
        "event",
        "{{ (value_json.confidence * 100) | round(0) }}",
        {"unit_of_measurement": "%", "state_class": "measurement"},
    ),
    ("kind", "Expression kind", "event", "{{ value_json.kind }}", {}),
    ("stage", "Deciding stage", "event", "{{ value_json.stage }}", {"entity_category": "diagnostic"}),
    (
        "fps",
        "Frame rate",
        "stats",
        "{{ value_json.fps }}",
        {"unit_of_measurement": "fps", "state_class": "measurement", "entity_category": "diagnostic"},
    ),
    ("health", "Health", "stats", "{{ value_json.health }}", {"entity_category": "diagnostic"}),
    (
        "outbox",
        "Outbox depth",
        "stats",
        "{{ value_json.outbox.depth }}",
        {"state_class": "measurement", "entity_category": "diagnostic"},
    ),
    (
        "uptime",
        "Uptime",
        "stats",
        "{{ value_json.uptime_s | round(0) }}",
        {"device_class": "duration", "unit_of_measurement": "s", "entity_category": "diagnostic"},
    ),
    (
        "reasoner",
        "Reasoner",
        "stats",
        "{{ value_json.reasoner.state if value_json.reasoner else 'disabled' }}",
        {"entity_category": "diagnostic"},
    ),
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
    messages: dict[str, str] = {}
    for object_id, name, source, template, extra in _SENSORS:
        state_topic = topics.event if source == "event" else topics.stats
        config: dict[str, Any] = {
            "name": name,
            "unique_id": f"microexpr_{device_id}_{object_id}",
            "state_topic": state_topic,
            "value_template": template,
            "availability_topic": topics.availability,
            "payload_available": Availability.ONLINE.value,
            "payload_not_available": Availability.OFFLINE.value,
            "has_entity_name": True,
            "device": device,
            **extra,
        }
        if object_id == "emotion":
            config["json_attributes_topic"] = topics.event
            config["json_attributes_template"] = (
                "{{ {'event_id': value_json.event_id, 'confidence': value_json.confidence, "
                "'stage': value_json.stage, 'aus': value_json.aus | map(attribute='au') | list, "
                "'explanation': value_json.explanation} | tojson }}"
            )
        messages[f"{topics.discovery_prefix}/sensor/{device_id}/{object_id}/config"] = dumps(config)
    return messages
