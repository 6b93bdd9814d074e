"""Prometheus metrics of the controller loop, in a registry of their own, served on `metricsPort`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from controller.model.actions import DnsAction
from controller.runtime.reconciler import PassResult

# A pass is a few reads and a handful of cmdlets; slow gateways make it minutes.
PASS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """What an operator graphs and alerts on: pass durations, actions by kind and result, open drift,
    batch progress, and when the last pass succeeded (alert when `time() - that` grows)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self.pass_duration = Histogram(
            "stagectl_pass_duration_seconds",
            "Duration of one reconcile pass, successful or not.",
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )
        self.actions = Counter(
            "stagectl_actions",
            "Actions applied, by kind (cmdlet or dns) and result (ok or error).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.open_drift = Gauge(
            "stagectl_drift_open", "Drifted objects alerted on and not yet cleared.", registry=self.registry
        )
        self.batch_synced = Gauge(
            "stagectl_batch_synced_users",
            "Users of a batch synced, per batch.",
            ["batch"],
            registry=self.registry,
        )
        self.batch_total = Gauge(
            "stagectl_batch_users", "Users of a batch, per batch.", ["batch"], registry=self.registry
        )
        self.last_success = Gauge(
            "stagectl_last_successful_pass_timestamp_seconds",
            "Unix time at the end of the last pass that applied without a failure.",
            registry=self.registry,
        )
        self.leader = Gauge(
            "stagectl_leader",
            "1 while this instance leads the tenant, 0 while it stands by (coordination).",
            ["tenant"],
            registry=self.registry,
        )
        self.leader_since = Gauge(
            "stagectl_leader_since_timestamp_seconds",
            "Unix time this instance won the tenant's leadership; 0 while it stands by.",
            ["tenant"],
            registry=self.registry,
        )
        for kind in ("cmdlet", "dns"):  # exported from the start, so a rate over them is never empty
            for result in ("ok", "error"):
                self.actions.labels(kind=kind, result=result)

    def record_pass(self, result: PassResult, *, seconds: float, status: Mapping[str, Any] | None) -> None:
        """After a pass that returned: its duration, its actions and the status it wrote."""
        self.pass_duration.observe(seconds)
        for outcome in result.report.outcomes:
            kind = "dns" if isinstance(outcome.action, DnsAction) else "cmdlet"
            self.actions.labels(kind=kind, result="ok" if outcome.ok else "error").inc()
        if status is not None:
            self.open_drift.set(len(status.get("drift", [])))
            self._batches(status.get("batches", []))
        if result.report.failed is None:
            self.last_success.set(self._clock())

    def record_leadership(self, tenant: str, *, leading: bool, since: str | None) -> None:
        self.leader.labels(tenant=tenant).set(1 if leading else 0)
        won = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp() if (leading and since) else 0
        self.leader_since.labels(tenant=tenant).set(won)

    def record_failure(self, *, seconds: float) -> None:
        """A pass that raised (Exchange, DNS or git failed): only its duration counts."""
        self.pass_duration.observe(seconds)

    def _batches(self, rows: list[Mapping[str, Any]]) -> None:
        names = {str(row["name"]) for row in rows}
        for gauge in (self.batch_synced, self.batch_total):  # a batch gone from the repository goes here too
            for (name,) in [labels for labels in _label_values(gauge) if labels[0] not in names]:
                gauge.remove(name)
        for row in rows:
            self.batch_synced.labels(batch=str(row["name"])).set(int(row["synced"]))
            self.batch_total.labels(batch=str(row["name"])).set(int(row["total"]))

    def serve(self, port: int, *, address: str = "127.0.0.1") -> tuple[int, Callable[[], None]]:
        """Serve /metrics over HTTP in a background thread (port 0: any free port); returns the port
        listened on and the function that stops the server."""
        server, thread = start_http_server(port, addr=address, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join()

        return int(server.server_address[1]), stop


def _label_values(gauge: Gauge) -> list[tuple[str, ...]]:
    return [tuple(sample.labels.values()) for metric in gauge.collect() for sample in metric.samples]
