"""MQTT: outbox-first delivery, availability, Home Assistant discovery.

Topics, under ``<topic_prefix>/<device_id>/``:

===================  ===  ======  =============================================
topic                QoS  retain  content
===================  ===  ======  =============================================
``availability``     1    yes     ``online`` on connect; ``offline`` as last
                                  will and on a clean stop
``event``            cfg  no      one JSON per episode, from the outbox
``event/refined``    cfg  no      the reasoner's label, same ``event_id``
``aus``              0    no      throttled AU samples (optional, not stored)
``stats``            0    yes     periodic health and latency
``event/lifecycle``  cfg  no      new / update / end notices (optional, stored)
``face``             1    yes     ``ON`` / ``OFF``: a face is in view
``set/<name>``       in   --      commands (:mod:`.commands`), subscribed
``state/<name>``     1    yes     the switches' state
===================  ===  ======  =============================================

Delivery: ``publish_event`` only commits the message to the :class:`Outbox`
and wakes the pump thread, so the caller (the inference thread) never waits
on the network. The pump hands stored messages to paho while connected,
keeping at most ``window`` in flight; paho's own network thread
(``loop_start``) reports each PUBACK through ``on_publish`` and the message is
deleted from the outbox then, never earlier. After a reconnect paho resends
what it had in flight and the pump sends the rest, so a message may arrive
twice but never zero times: subscribers de-duplicate by ``event_id``.

Modules: :mod:`.topics` (the topic tree, device ids, settings protocol),
:mod:`.discovery` (Home Assistant discovery configs), :mod:`.commands`
(the commands accepted on ``set/<name>``), :mod:`.publisher`
(the paho client, its pump thread and the outbox hand-over).
"""

from microexpr.mqtt.discovery import discovery_messages
from microexpr.mqtt.publisher import MqttPublisher, PublisherStatus, StatsSource
from microexpr.mqtt.topics import DEVICE_ID_PATTERN, MqttSettings, Topics, check_device_id, parse_payload

__all__ = [
    "DEVICE_ID_PATTERN",
    "MqttPublisher",
    "MqttSettings",
    "PublisherStatus",
    "StatsSource",
    "Topics",
    "check_device_id",
    "discovery_messages",
    "parse_payload",
]
