"""Prometheus metrics of the server (vLLM's semantics, `hytron_` names): queue, tokens, latencies, outcomes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from hytron.infer import Completion

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _EngineCollector:
    """Reads the engine's live counters at scrape time (no double bookkeeping)."""

    def __init__(self, backend):
        self.backend = backend

    def collect(self):
        e, name = self.backend.engine, self.backend.name
        for metric, value, help_ in [
            ("hytron_num_requests_running", e.num_active, "requests holding a slot (prefilling or decoding)"),
            ("hytron_num_requests_waiting", e.num_waiting, "requests queued for a slot"),
            ("hytron_cache_bytes", e.cache_bytes(), "bytes held by the batched inference cache"),
        ]:
            g = GaugeMetricFamily(metric, help_, labels=["model_name"])
            g.add_metric([name], value)
            yield g
        for key, help_ in [("prompt_tokens", "prompt tokens prefilled"),
                           ("generation_tokens", "tokens generated (thinking included)"),
                           ("reasoning_tokens", "thinking tokens generated")]:
            c = CounterMetricFamily(f"hytron_{key}", help_, labels=["model_name"])
            c.add_metric([name], e.stats[key])
            yield c
        if e.speculative_tokens:  # vLLM's spec_decode_* counters, and the two ratios users ask for
            drafts, drafted, accepted = (e.stats[k] for k in ("spec_drafts", "spec_draft_tokens",
                                                               "spec_accepted_tokens"))
            for key, value, help_ in [("num_drafts", drafts, "verify steps (per request) of K MTP drafts"),
                                      ("num_draft_tokens", drafted, "tokens drafted by the MTP head"),
                                      ("num_accepted_tokens", accepted, "drafted tokens accepted")]:
                c = CounterMetricFamily(f"hytron_spec_decode_{key}", help_, labels=["model_name"])
                c.add_metric([name], value)
                yield c
            for key, value, help_ in [
                ("acceptance_rate", accepted / drafted if drafted else 0.0, "accepted / drafted tokens, since start"),
                ("mean_accepted_length", 1 + accepted / drafts if drafts else 0.0,
                 "tokens released per verify step (accepted drafts + 1), since start")]:
                g = GaugeMetricFamily(f"hytron_spec_decode_{key}", help_, labels=["model_name"])
                g.add_metric([name], value)
                yield g
        if e.prefix_cache is not None:
            yield from self._prefix_cache(e.prefix_cache, name)

    @staticmethod
    def _prefix_cache(pc, name: str):
        """vLLM's prefix_cache_queries / prefix_cache_hits (in tokens), and what the cache holds."""
        s = pc.stats
        for key, value, help_ in [
            ("queries", s["queried_tokens"], "prompt tokens looked up in the prefix cache"),
            ("hits", s["hit_tokens"], "prompt tokens restored from the prefix cache instead of prefilled"),
            ("requests", s["queries"], "prompts looked up in the prefix cache"),
            ("request_hits", s["hits"], "prompts that reused at least one cached block"),
            ("stored", s["stored"], "entries stored (blocks and prompt or sequence ends: KV + Mamba state)"),
            ("evictions", s["evictions"], "entries evicted to stay within the byte budget")]:
            c = CounterMetricFamily(f"hytron_prefix_cache_{key}", help_, labels=["model_name"])
            c.add_metric([name], value)
            yield c
        for key, value, help_ in [
            ("bytes", pc.bytes, "bytes held by the prefix cache"),
            ("max_bytes", pc.max_bytes, "the prefix cache's byte budget"),
            ("entries", len(pc), "entries held by the prefix cache"),
            ("hit_rate", s["hit_tokens"] / s["queried_tokens"] if s["queried_tokens"] else 0.0,
             "cached / queried prompt tokens, since start")]:
            g = GaugeMetricFamily(f"hytron_prefix_cache_{key}", help_, labels=["model_name"])
            g.add_metric([name], value)
            yield g


class Metrics:
    def __init__(self, backend):
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(backend))
        labels = ["model_name"]
        self.name = backend.name
        self.success = Counter("hytron_request_success", "finished requests by finish reason",
                               labels + ["finished_reason"], registry=self.registry)
        self.ttft = Histogram("hytron_time_to_first_token_seconds", "arrival to first token", labels,
                              buckets=LATENCY_BUCKETS, registry=self.registry)
        self.e2e = Histogram("hytron_e2e_request_latency_seconds", "arrival to last token", labels,
                             buckets=LATENCY_BUCKETS, registry=self.registry)
        self.itl = Histogram("hytron_inter_token_latency_seconds", "mean time between output tokens", labels,
                             buckets=LATENCY_BUCKETS, registry=self.registry)
        self.http = Counter("hytron_http_requests", "HTTP responses by status code", ["status"],
                            registry=self.registry)

    def observe(self, c: Completion) -> None:
        self.success.labels(self.name, c.finish_reason).inc()
        self.e2e.labels(self.name).observe(c.finish_time - c.arrival_time)
        if c.first_token_time is not None:
            self.ttft.labels(self.name).observe(c.first_token_time - c.arrival_time)
            if c.completion_tokens > 1:
                self.itl.labels(self.name).observe((c.finish_time - c.first_token_time) / (c.completion_tokens - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
