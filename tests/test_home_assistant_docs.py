"""docs/home-assistant.md and docs/nodered-flow.json stay true to what the device publishes.

Home Assistant names an entity ``<component>.<slug(device name + entity name)>``
when ``has_entity_name`` is set; the ids in the page must be those of the
discovery configs. The Node-RED flow must be importable (nodes wired to
nodes that exist) and use only the device's topics and accepted payloads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from microexpr.facs import Emotion
from microexpr.mqtt import Topics, discovery_messages
from microexpr.mqtt.commands import parse_command

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "home-assistant.md"
FLOW = ROOT / "docs" / "nodered-flow.json"
DEVICE = "kiosk-1"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _entity_ids() -> set[str]:
    topics = Topics.build("microexpr", DEVICE)
    ids = set()
    for topic, text in discovery_messages(topics, DEVICE).items():
        component = topic.split("/")[1]
        config = json.loads(text)
        ids.add(f"{component}.{_slug(config['device']['name'] + ' ' + config['name'])}")
    return ids


def test_entity_ids_on_the_page_are_the_discovered_ones() -> None:
    text = PAGE.read_text(encoding="utf-8")
    named = set(re.findall(r"\b(?:event|sensor|binary_sensor|switch|button)\.microexpr_\w+", text))
    assert named and named <= _entity_ids(), named - _entity_ids()


def test_automation_uses_labels_and_the_event_entity() -> None:
    text = PAGE.read_text(encoding="utf-8")
    block = re.search(r"<!-- ha-automation -->\s*```yaml\n(.*?)```", text, flags=re.S)
    assert block
    automation = block.group(1)
    labels = {e.value for e in Emotion}
    used = set(re.findall(r"event_type == '(\w+)'", automation))
    assert used and used <= labels
    assert "entity_id: event.microexpr_kiosk_1_expression" in automation
    # every attribute the automation reads is one the event entity's template provides
    from microexpr.mqtt.discovery import EVENT_TEMPLATE
    provided = set(re.findall(r"'(\w+)':", EVENT_TEMPLATE))
    read = set(re.findall(r"attributes\.(\w+)", automation))
    assert read <= provided, read - provided


def test_node_red_flow_is_wired_and_speaks_the_devices_topics() -> None:
    nodes = json.loads(FLOW.read_text(encoding="utf-8"))
    ids = {node["id"] for node in nodes}
    assert len(ids) == len(nodes)
    for node in nodes:
        for output in node.get("wires", []):
            assert set(output) <= ids, (node["id"], output)
        if "z" in node:
            assert node["z"] in ids
        if node["type"] in ("mqtt in", "mqtt out"):
            assert node["broker"] in ids
    topics = Topics.build("microexpr", DEVICE)
    published = {topics.event, topics.refined, topics.lifecycle, topics.stats, topics.face, topics.aus}
    by_id = {node["id"]: node for node in nodes}
    for node in nodes:
        if node["type"] == "mqtt in":
            assert node["topic"] in published, node["topic"]
        if node["type"] == "mqtt out":
            assert node["retain"] == "false"  # a retained command would be applied again at every reconnect
            senders = [n for n in nodes if node["id"] in {w for out in n.get("wires", []) for w in out}]
            assert senders
            for sender in senders:  # the payloads wired into it are accepted commands
                parse_command(topics.set_base, node["topic"], by_id[sender["id"]]["payload"].encode())
    switch = next(node for node in nodes if node["type"] == "switch")
    assert [rule["v"] for rule in switch["rules"]] == ["new", "update", "end"]
