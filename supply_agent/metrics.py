"""Prometheus metrics for ``supply-agent serve`` (prometheus-client), one registry per service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from supply_agent.models.incident import IncidentState

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_MINUTES = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "supply_agent_events_received",
            "Webhooks received, by source and result.",
            ["source", "result"],
            registry=r,
        )
        self.handled = Counter(
            "supply_agent_events_handled", "Stored events handled, by status.", ["status"], registry=r
        )
        self.queue = Gauge("supply_agent_queue_depth", "Stored events not yet handled.", registry=r)
        # The process's own pauses (supply_agent.heap): a full collection stops every request in flight.
        self.gc_pause = Histogram(
            "supply_agent_gc_pause_seconds",
            "Garbage collections of this process, by generation, and how long each held the interpreter.",
            ["generation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
            registry=r,
        )
        self.gc_frozen = Gauge(
            "supply_agent_gc_frozen_objects",
            "Objects start-up made, kept out of every collection (gc.freeze); 0: the heap was not settled.",
            registry=r,
        )
        self.incidents = Counter(
            "supply_agent_incidents", "Incidents finished, by outcome.", ["outcome"], registry=r
        )
        self.opened = Counter("supply_agent_incidents_opened", "Incidents opened.", registry=r)
        self.proposals = Counter(
            "supply_agent_proposals", "Proposed actions, by the gate's decision.", ["decision"], registry=r
        )
        self.approval_wait = Histogram(
            "supply_agent_approval_wait_seconds",
            "From the approval request to the human's answer.",
            ["answer"],
            buckets=_MINUTES,
            registry=r,
        )
        self.time_to_mitigate = Histogram(
            "supply_agent_time_to_mitigate_seconds",
            "From the incident opening to a verified mitigation.",
            buckets=_MINUTES,
            registry=r,
        )
        self.tool_latency = Histogram(
            "supply_agent_tool_call_seconds",
            "Tool call latency, by tool.",
            ["tool"],
            buckets=_SECONDS,
            registry=r,
        )
        self.llm_tokens = Counter(
            "supply_agent_llm_tokens", "LLM tokens, by model and kind.", ["model", "kind"], registry=r
        )
        self.llm_cost = Counter(
            "supply_agent_llm_cost_usd", "LLM cost in US dollars, by model.", ["model"], registry=r
        )
        self.writeback_errors = Counter(
            "supply_agent_writeback_errors", "Failed PagerDuty or Slack calls.", ["target"], registry=r
        )
        self.job_retries = Counter(
            "supply_agent_job_retries",
            "Jobs put back after a failure that may pass, by kind.",
            ["kind"],
            registry=r,
        )
        self.dead_letters = Counter(
            "supply_agent_dead_letters",
            "Jobs and events ended by a failure that will not pass, by kind.",
            ["kind"],
            registry=r,
        )
        self.dead_letters_now = Gauge(
            "supply_agent_dead_letters_stored",
            "Dead letters in the stores now (jobs dead, events failed), by kind.",
            ["kind"],
            registry=r,
        )
        self.stalled = Gauge(
            "supply_agent_stalled_incidents",
            "Incidents whose work has failed for longer than the hand-back bound.",
            registry=r,
        )
        self.breaker_tripped = Gauge(
            "supply_agent_breaker_tripped",
            "1 while the circuit breaker is tripped (or cannot be read): no action runs until a human resets it.",
            registry=r,
        )
        self.frozen = Gauge(
            "supply_agent_frozen",
            "1 while the kill switch stops every write (or cannot be read).",
            registry=r,
        )
        self.handed_back = Counter(
            "supply_agent_handed_back",
            "Incidents handed back to humans by the dead man's switch, by path.",
            ["path"],
            registry=r,
        )

    def finished(self, state: IncidentState) -> None:
        """Count one incident once, when its thread ends."""
        self.incidents.labels(state.outcome or "unknown").inc()
        for step in state.steps:
            verdict = step.decision.verdict.value if step.decision else step.outcome
            self.proposals.labels(verdict).inc()
            if step.io_ms:
                self.tool_latency.labels(step.action.tool).observe(step.io_ms / 1000)
        for ev in state.evidence:
            self.tool_latency.labels(ev.tool).observe(ev.ms / 1000)
        for call in state.llm_calls:
            self.llm_tokens.labels(call.model, "input").inc(call.input_tokens)
            self.llm_tokens.labels(call.model, "output").inc(call.output_tokens)
            self.llm_tokens.labels(call.model, "cache_read").inc(call.cache_read_tokens)
            self.llm_cost.labels(call.model).inc(float(call.cost_usd))
        if state.outcome == "mitigated" and state.timeline:
            self.time_to_mitigate.observe(max(0.0, (state.timeline[-1].at - state.opened_at).total_seconds()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
