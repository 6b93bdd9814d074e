"""Benchmark: DNS messages per observe pass and per apply, 50 managed RRsets on 2 real BIND servers.

Run: `.venv/bin/python -m bench.dns` (needs `named`); prints message counts and wall times.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from controller.dns.rfc2136 import Rfc2136Backend
from controller.dns.settings import Rfc2136Settings
from controller.model.actions import DnsAction
from tests.support.bind import ZONE, bind_zone, wait_until_serving

RRSETS = 50
CHANGED = 10


def _action(index: int, ttl: int, values: tuple[str, ...], previous: tuple[str, ...] | None) -> DnsAction:
    return DnsAction(
        zone=ZONE,
        name=f"host{index:02}",
        type="A",
        ttl=ttl,
        values=values,
        previous_ttl=None if previous is None else 3600,
        previous_values=previous,
        object=f"dns/{ZONE}/host{index:02}/A",
        reason="bench",
        kind="create" if previous is None else "update",
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch, bind_zone(secondary=True, notify=True) as bind:
        assert bind.secondary is not None
        key_file = bind.key_file(Path(scratch) / "bench.key")
        backend = Rfc2136Backend(
            Rfc2136Settings.model_validate(
                {
                    "default": {
                        "servers": [bind.primary.address, bind.secondary.address],
                        "primary": bind.primary.address,
                        "keyRef": f"file:{key_file}",
                    }
                }
            )
        )
        wanted = {ZONE: [(f"host{i:02}", "A") for i in range(RRSETS)]}

        started = time.perf_counter()
        for i in range(RRSETS):
            backend.apply(_action(i, 3600, (f"192.0.2.{i + 1}",), None))
        create_time = time.perf_counter() - started
        creates = (backend.messages.updates, backend.messages.queries)
        wait_until_serving(bind.secondary, serial=1 + RRSETS)

        backend.messages.reset()
        started = time.perf_counter()
        result = backend.observe(wanted)
        observe_time = time.perf_counter() - started
        observe_queries = backend.messages.queries
        assert result.findings == (), result.findings
        assert len(result.zones[ZONE] or []) == RRSETS

        backend.messages.reset()
        started = time.perf_counter()
        for i in range(CHANGED):
            backend.apply(_action(i, 300, (f"198.51.100.{i + 1}",), (f"192.0.2.{i + 1}",)))
        update_time = time.perf_counter() - started
        updates = (backend.messages.updates, backend.messages.queries)

    servers = 2
    print(f"managed RRsets: {RRSETS} on {servers} servers (BIND primary + secondary by NOTIFY/IXFR)")
    print(
        f"observe pass: {observe_queries} queries (target {servers} x ({RRSETS} + 1 SOA + 1 wildcard"
        f" check) = {servers * (RRSETS + 2)}), {observe_time * 1000:.0f} ms"
    )
    print(
        f"apply, {RRSETS} creates: {creates[0]} UPDATEs + {creates[1]} verify queries,"
        f" {create_time * 1000 / RRSETS:.1f} ms per RRset"
    )
    print(
        f"apply, {CHANGED} replacements: {updates[0]} UPDATEs + {updates[1]} verify queries,"
        f" {update_time * 1000 / CHANGED:.1f} ms per RRset"
    )


if __name__ == "__main__":
    main()
