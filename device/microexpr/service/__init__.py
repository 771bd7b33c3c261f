"""The daemon: the one place that wires capture, pipeline, outbox, MQTT and reasoner.

Threads (each named, owned by :class:`Service`, sharing one stop event and
joined with a timeout)::

    capture ──FrameItem/SourceLost/SourceRestored/EndOfStream──▶ inference ─▶ analysis
      (bounded queue "frames")                                      │ (tracker.overlap)
                                            Event ─▶ Outbox (SQLite, committed first)
                                                       │            └─▶ stdout (JSON line)
                                            mqtt-pump ◀┘  ambiguous ─▶ reasoner-N ─▶ Outbox
    stats: retained ``stats`` every mqtt.stats_interval_s, STATUS= every few seconds
    main: signals (TERM/INT stop, HUP reload) and supervision

* **capture** reads the :class:`~microexpr.capture.FrameSource`. A live
  source already keeps only the latest frame on its own thread, and the
  ``frames`` queue drops its oldest entry when full, so a slow pipeline sees
  fresh frames; a file source blocks on the full queue instead (back-pressure:
  every frame is processed, results do not depend on the machine's speed).
  Camera loss: retries with exponential backoff from
  ``source.reconnect_initial_s`` to ``source.reconnect_max_s``, health
  ``no_camera``; never a crash, never a restart loop.
* **inference** runs the pipeline (with ``tracker.overlap``, only the
  tracker: the **analysis** thread of :mod:`microexpr.overlap` runs the
  other stages on frame t while inference tracks t+1, and does what
  follows), turns each finished episode into an
  :class:`~microexpr.events.Event`, commits it to the outbox *before* anything
  else sees it (a SIGKILL after that loses nothing), prints it, and queues
  ambiguous ones for the reasoner. It alone pings the systemd watchdog,
  including while it waits for frames, so a lost camera does not trip the
  watchdog but a hung stage does.
* **mqtt-pump** (owned by :class:`~microexpr.mqtt.MqttPublisher`) drains the
  outbox to the broker; paho's network thread is paho's.

See docs/service.md for signals, health states and shutdown guarantees.

Modules: :mod:`.daemon` (the :class:`Service` and its threads),
:mod:`.options` (command line and configuration), :mod:`.items` (what
passes between threads), :mod:`.metrics`, :mod:`.stats`, :mod:`.build`
(the real pipeline).
"""

from microexpr.service.build import build_pipeline
from microexpr.service.daemon import Service, run
from microexpr.service.metrics import Metrics
from microexpr.service.options import RunOptions, is_live_spec, load_run_config, stdout_is_journal

__all__ = [
    "Metrics",
    "RunOptions",
    "Service",
    "build_pipeline",
    "is_live_spec",
    "load_run_config",
    "run",
    "stdout_is_journal",
]
