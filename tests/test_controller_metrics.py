"""Prometheus metrics over real HTTP on loopback: after a pass in-process, and from `stagectl run`."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.runtime import metrics, status
from tests.support.controller import PILOT, WAVE, make_workspace

BOUND = 120.0  # an upper bound for a stuck process, never an expectation about speed


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at http://127.0.0.1:PORT/metrics, by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=BOUND) as response:
        text = response.read().decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_pass_is_counted_and_scraped_over_http(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws", pilot="started")
    result = workspace.run_pass()
    collected = metrics.Metrics(clock=lambda: 1_790_000_000.0)
    collected.record_pass(result, seconds=0.2, status=status.read(workspace.state_dir))
    port, stop = collected.serve(0, address="127.0.0.1")
    try:
        samples = scrape(port)
    finally:
        stop()

    assert samples[("stagectl_pass_duration_seconds_count", ())] == 1
    assert samples[("stagectl_pass_duration_seconds_sum", ())] == 0.2
    assert samples[("stagectl_pass_duration_seconds_bucket", (("le", "0.25"),))] == 1
    assert samples[("stagectl_pass_duration_seconds_bucket", (("le", "0.1"),))] == 0
    # New-MigrationEndpoint and New-MigrationBatch; the MX TTL lowered ahead of the cutover and the
    # coexistence SPF string written before the first batch starts.
    assert samples[("stagectl_actions_total", (("kind", "cmdlet"), ("result", "ok")))] == 2
    assert samples[("stagectl_actions_total", (("kind", "dns"), ("result", "ok")))] == 2
    assert samples[("stagectl_actions_total", (("kind", "cmdlet"), ("result", "error")))] == 0
    assert samples[("stagectl_drift_open", ())] == 0
    assert samples[("stagectl_batch_synced_users", (("batch", PILOT),))] == 0
    assert samples[("stagectl_batch_users", (("batch", PILOT),))] == 2
    assert samples[("stagectl_batch_users", (("batch", WAVE),))] == 3
    assert samples[("stagectl_last_successful_pass_timestamp_seconds", ())] == 1_790_000_000.0

    # Progress moves with the tenant: the pilot synced after the simulated hours.
    with workspace.tenant() as tenant:
        tenant.advance(timedelta(hours=3))
    collected.record_pass(workspace.run_pass(), seconds=0.3, status=status.read(workspace.state_dir))
    port, stop = collected.serve(0, address="127.0.0.1")
    try:
        samples = scrape(port)
    finally:
        stop()
    assert samples[("stagectl_pass_duration_seconds_count", ())] == 2
    assert samples[("stagectl_batch_synced_users", (("batch", PILOT),))] == 2
    assert samples[("stagectl_actions_total", (("kind", "cmdlet"), ("result", "ok")))] == 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_stagectl_run_serves_metrics_on_its_port(tmp_path: Path) -> None:
    port = free_port()
    workspace = make_workspace(tmp_path / "ws", pilot="started", metricsPort=port)
    process = workspace.start("run", "--config", str(workspace.config_path))
    try:
        deadline = time.monotonic() + BOUND
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while samples.get(("stagectl_pass_duration_seconds_count", ()), 0) < 1:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, f"no pass counted on port {port} within {BOUND}s"
            try:
                samples = scrape(port)
            except OSError:  # not listening yet
                time.sleep(0.05)
        assert samples[("stagectl_actions_total", (("kind", "cmdlet"), ("result", "ok")))] == 2
        assert samples[("stagectl_batch_users", (("batch", PILOT),))] == 2
        assert samples[("stagectl_last_successful_pass_timestamp_seconds", ())] > 0
        assert samples[("stagectl_drift_open", ())] == 0
        # The dedicated registry: none of the global default collectors (process_, python_gc_).
        assert not any(name.startswith(("process_", "python_")) for name, _ in samples)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=BOUND)
    assert process.returncode == 0, err
    with pytest.raises(OSError):  # the server went with the process
        scrape(port)
