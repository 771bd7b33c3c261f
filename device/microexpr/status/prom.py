"""Prometheus metrics for ``/metrics``, in a registry private to one server.

Two kinds of series:

* **Counted on the way** (``prometheus_client`` counters and histograms):
  frames, frames with a face, per-stage latency, episodes by kind and
  label, ambiguous episodes, refinements, events the outbox refused, and
  requests the status server rejected. The frame path pays one counter
  increment and one histogram observation per stage (a few microseconds in
  all; docs/status.md gives the measured share).
* **Read at scrape time** (:class:`_StatsCollector`): everything the
  daemon's ``stats`` payload already knows — fps, dropped frames, outbox
  depth and drops, suppressed candidates, the dense flow's decisions, the
  analysis thread's priority, health, broker and reasoner state and
  budget. Reading them only when scraped costs the frame path nothing.

The registry is per server (never the global default), so two services in
one process — tests, the benchmark — never share or collide on series.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from microexpr.config import ReasonerConfig
from microexpr.events import Event, RefinedEvent
from microexpr.health import Health
from microexpr.status.feed import BrokerState, StatusSources

log = logging.getLogger(__name__)

#: Latency buckets, seconds: a frame on a Pi 4 takes tens of ms, here ~10 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5)
#: At most one log line per this many seconds for a failing stats read.
_LOG_EVERY_S = 60.0


class StatusMetrics:
    """The private registry and the series the daemon feeds."""

    def __init__(self, sources: StatusSources, reasoner: ReasonerConfig) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = Counter("microexpr_frames", "Frames that went through the whole pipeline.", registry=r)
        self.faces = Counter("microexpr_frames_with_face", "Frames in which the tracker found a face.", registry=r)
        self.latency = Histogram(
            "microexpr_stage_latency_seconds",
            "Time per frame in each pipeline stage; stage=total is capture to result.",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.episodes = Counter("microexpr_episodes", "Episodes published, by kind and emotion label.",
                                ["kind", "label"], registry=r)
        self.ambiguous = Counter("microexpr_ambiguous_episodes",
                                 "Episodes the local classifier marked ambiguous.", registry=r)
        self.refined = Counter("microexpr_refined_episodes", "Reasoner refinements, by label and agreement.",
                               ["label", "agrees"], registry=r)
        self.publish_failures = Counter(
            "microexpr_publish_failures",
            "Events or refinements the outbox did not store (full with reject_new, or unwritable).",
            ["reason"], registry=r)
        self.rejected_requests = Counter("microexpr_status_rejected_requests",
                                         "Requests the status server refused, by HTTP status.", ["code"], registry=r)
        # Bound label children once: a lookup by label per frame would cost more than the observation.
        self._stage: dict[str, Any] = {}
        r.register(_StatsCollector(sources, reasoner))

    def observe_frame(self, timings: Mapping[str, float], face: bool) -> None:
        self.frames.inc()
        if face:
            self.faces.inc()
        stages = self._stage
        for stage, seconds in timings.items():
            child = stages.get(stage)
            if child is None:
                child = stages[stage] = self.latency.labels(stage=stage)
            child.observe(seconds)

    def observe_event(self, event: Event) -> None:
        self.episodes.labels(kind=event.kind.value, label=event.emotion.value).inc()
        if event.ambiguous:
            self.ambiguous.inc()

    def observe_refined(self, refined: RefinedEvent) -> None:
        self.refined.labels(label=refined.emotion.value, agrees=str(refined.agrees_with_local).lower()).inc()


class _StatsCollector(Collector):
    """Series read from the daemon's ``stats`` when Prometheus scrapes."""

    def __init__(self, sources: StatusSources, reasoner: ReasonerConfig) -> None:
        self._sources = sources
        self._reasoner = reasoner
        self._last_log = float("-inf")
        self.failures = 0

    def describe(self) -> list[Metric]:
        return []  # generated at collect time: the registry must not call stats() on register

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._sources.stats()
            broker = self._sources.broker()
        except Exception:
            # A scrape must still answer with the counted series; say why these are missing.
            self.failures += 1
            now = time.monotonic()
            if now - self._last_log >= _LOG_EVERY_S:
                self._last_log = now
                log.exception("status: reading the daemon's stats failed (%d times so far)", self.failures)
            yield CounterMetricFamily("microexpr_status_stats_failures", "Scrapes whose stats read failed.",
                                      value=self.failures)
            return
        yield GaugeMetricFamily("microexpr_up_seconds", "Seconds since the daemon started.", value=stats.uptime_s)
        yield GaugeMetricFamily("microexpr_fps", "Frames processed per second over the last 5 s.", value=stats.fps)
        yield CounterMetricFamily("microexpr_dropped_frames", "Frames dropped before inference (live sources).",
                                  value=stats.dropped_frames)
        yield GaugeMetricFamily("microexpr_outbox_depth", "Messages waiting in the outbox for the broker.",
                                value=stats.outbox_depth)
        yield CounterMetricFamily("microexpr_outbox_dropped", "Messages the full outbox dropped.",
                                  value=stats.outbox_dropped)
        queues = GaugeMetricFamily("microexpr_queue_depth", "Items waiting between threads.", labels=["queue"])
        for name, depth in stats.queues.items():
            queues.add_metric([name], depth)
        yield queues
        suppressed = CounterMetricFamily("microexpr_suppressed", "Candidate episodes withheld, by reason.",
                                         labels=["reason"])
        for reason, count in stats.suppressed.items():
            suppressed.add_metric([reason], count)
        yield suppressed
        flow = CounterMetricFamily("microexpr_flow_frames", "Frames with a face by what the dense flow did "
                                   "(ran; skipped at rest; backfilled, among skipped).", labels=["decision"])
        for decision, count in stats.flow.items():
            flow.add_metric([decision], count)
        yield flow
        if stats.analysis:  # the tracker and the analysis overlap
            yield CounterMetricFamily("microexpr_analysis_promoted", "Times the analysis thread fell a frame "
                                      "behind and got its normal priority back.", value=stats.analysis["promoted"])
            yield GaugeMetricFamily("microexpr_analysis_yielding", "1 while the analysis thread runs at SCHED_IDLE.",
                                    value=stats.analysis["yielding"])
        health = GaugeMetricFamily("microexpr_health", "1 for the daemon's current health state.", labels=["state"])
        for state in Health:
            health.add_metric([state.value], 1.0 if state.value == stats.health else 0.0)
        yield health
        brokers = GaugeMetricFamily("microexpr_broker", "1 for the MQTT connection's state.", labels=["state"])
        for state in BrokerState:
            brokers.add_metric([state.value], 1.0 if broker is state else 0.0)
        yield brokers
        yield from self._reasoner_series(stats.reasoner)

    def _reasoner_series(self, state: Any) -> Iterator[Metric]:
        cfg = self._reasoner
        yield GaugeMetricFamily("microexpr_reasoner_enabled", "1 when the LLM reasoner is enabled.",
                                value=1.0 if cfg.enabled else 0.0)
        yield GaugeMetricFamily("microexpr_reasoner_budget_requests_per_day", "Daily request budget.",
                                value=cfg.max_requests_per_day)
        yield GaugeMetricFamily("microexpr_reasoner_budget_tokens_per_day", "Daily token budget.",
                                value=cfg.max_tokens_per_day)
        if state is None:
            return
        yield GaugeMetricFamily("microexpr_reasoner_requests_today", "Requests used today.",
                                value=state.requests_today)
        yield GaugeMetricFamily("microexpr_reasoner_tokens_today", "Tokens used today.", value=state.tokens_today)
        yield GaugeMetricFamily("microexpr_reasoner_budget_exhausted", "1 when today's budget is used up.",
                                value=1.0 if state.budget_exhausted else 0.0)
        yield GaugeMetricFamily("microexpr_reasoner_queue_depth", "Ambiguous episodes waiting for the reasoner.",
                                value=state.queue_depth)
        states = GaugeMetricFamily("microexpr_reasoner_state", "1 for the reasoner's current state.",
                                   labels=["state"])
        states.add_metric([state.state], 1.0)
        yield states
