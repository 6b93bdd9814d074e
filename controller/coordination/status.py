"""What `stagectl status` and `stagectl audit verify` say of a coordinated tenant: who leads it and since
when, the instances standing by, and whether its audit chain in etcd is intact."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from controller import errors
from controller.coordination.etcd import Etcd
from controller.coordination.leadership import read_leader, tenant_prefix
from controller.coordination.service import LEADERSHIP_FILE, tenant_name
from controller.coordination.session import live_instances
from controller.coordination.shared_audit import shared_lines, verify_shared
from controller.model.snapshot import Memory
from controller.runtime.config import ControllerConfig


def _etcd(config: ControllerConfig) -> tuple[Etcd, str]:
    assert config.coordination is not None
    return Etcd(config.coordination.etcd, base_dir=Path(config.base_dir)), config.coordination.prefix


def leadership(config: ControllerConfig) -> dict[str, Any]:
    """Who leads the tenant (from etcd), the live instances, and what this state directory's instance
    last knew; `leader` is "unknown" when etcd cannot say (never "nobody")."""
    tenant = tenant_name(config)
    etcd, prefix = _etcd(config)
    here = _local(config)
    try:
        leader = read_leader(etcd, prefix, tenant)
        live = sorted(name for name, tenants in live_instances(etcd, prefix).items() if tenant in tenants)
    except errors.ExternalFailure as error:
        return {
            "tenant": tenant,
            "leader": "unknown",
            "since": None,
            "instances": None,
            "error": str(error),
            "thisInstance": here,
        }
    return {
        "tenant": tenant,
        "leader": leader.instance if leader else None,
        "since": leader.since if leader else None,
        "instances": live,
        "thisInstance": here,
    }


def memory(config: ControllerConfig) -> Memory:
    """The tenant's memory as its leaders keep it in etcd (read only: no leadership needed); `Unavailable`
    when etcd cannot say, never an empty memory in its place."""
    etcd, prefix = _etcd(config)
    kv = etcd.get(f"{tenant_prefix(prefix, tenant_name(config))}state/settings/memory")
    return Memory() if kv is None else Memory.model_validate_json(kv.value)


def _local(config: ControllerConfig) -> dict[str, Any] | None:
    try:
        data = json.loads((config.path(config.state_dir) / LEADERSHIP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def as_text(data: dict[str, Any]) -> str:
    if data["leader"] == "unknown":
        lead = f"unknown: {data.get('error', 'etcd did not answer')}"
    elif data["leader"] is None:
        lead = "none: no instance leads it now (a standby takes it within one lease TTL)"
    else:
        lead = f"{data['leader']} since {data['since']}"
    lines = [f"tenant      {data['tenant']}", f"leader      {lead}"]
    if data.get("instances") is not None:
        lines.append(f"instances   {', '.join(data['instances']) or 'none alive'}")
    here = data.get("thisInstance")
    if here:
        role = "leading" if here.get("leading") else "standing by"
        lines.append(
            f"this state  instance {here.get('instance')}: {role}, as it last recorded (etcd above decides)"
        )
    return "\n".join(lines) + "\n\n"


def verify_chain(config: ControllerConfig) -> int:
    """`stagectl audit verify --config` of a coordinated tenant: the one chain in etcd, every leader's."""
    tenant = tenant_name(config)
    etcd, prefix = _etcd(config)
    root = tenant_prefix(prefix, tenant)
    found = verify_shared(etcd, root)
    where = f"audit chain of tenant {tenant} in etcd"
    if found is not None:
        print(f"{where}: {found.reason}", file=sys.stderr)
        return 1
    writers: Counter[str] = Counter()
    total = 0
    for line in shared_lines(etcd, root):
        total += 1
        writers[str(json.loads(line).get("instance", "(single machine)"))] += 1
    by = ", ".join(f"{name} {count}" for name, count in sorted(writers.items()))
    print(f"{where}: {total} records, chain intact (written by {by or 'nobody yet'})")
    return 0
