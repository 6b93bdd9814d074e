"""Build a Reconciler from the controller configuration: source, store, audit log, backends, alert sinks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from controller import errors
from controller.notify import delivery, webhooks
from controller.runtime import audit
from controller.runtime.backends import Rehearsal, open_backends
from controller.runtime.config import ControllerConfig
from controller.runtime.reconciler import Reconciler
from controller.runtime.source import GitSource, SignaturePolicy
from controller.runtime.store import Store


def source_of(config: ControllerConfig) -> GitSource:
    if config.source is None:
        raise errors.InvalidInput("source: the configuration names no git repository to follow")
    repo = config.source.repo
    if "://" not in repo and not repo.startswith("git@"):
        repo = str(config.path(repo))
    verify = config.source.verify
    policy = None
    if verify is not None:
        policy = SignaturePolicy(
            allowed_signers=config.path(verify.allowed_signers) if verify.allowed_signers else None,
            gpg_home=config.path(verify.gpg_home) if verify.gpg_home else None,
        )
    return GitSource(
        repo,
        branch=config.source.branch,
        desired_dir=config.source.desired_dir,
        workdir=config.path(config.state_dir),
        verify=policy,
    )


def sinks_of(config: ControllerConfig) -> list[delivery.AlertSink]:
    sinks: list[delivery.AlertSink] = []
    for sink in config.alerts:
        url = webhooks.resolve_secret(sink.url_ref)
        if sink.type == "webhook":
            sinks.append(webhooks.WebhookSink(url=url, secret_ref=sink.secret_ref))
        elif sink.type == "teams":
            sinks.append(webhooks.TeamsSink(url=url))
        else:
            sinks.append(webhooks.SlackSink(url=url))
    return sinks


def build(
    config: ControllerConfig,
    *,
    rehearsal: Rehearsal | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    store: Callable[[Path], Store] = Store.open,
    audit_log: Callable[[Path], audit.AuditLog] = audit.AuditLog,
) -> Reconciler:
    """A reconciler over the configured backends; `rehearsal` opens `sim` backends (the commands pass it).
    `store` and `audit_log` open the state database and the audit log (coordination shares them in etcd)."""
    state_dir: Path = config.path(config.state_dir)
    return Reconciler(
        config=config,
        source=source_of(config),
        store=store(state_dir),
        audit=audit_log(audit.path_in(state_dir)),
        backends=open_backends(exchange=None, dns=None, config=config, rehearsal=rehearsal),
        alerts=delivery.AlertDispatcher(sinks_of(config)),
        should_stop=should_stop,
    )


def close(reconciler: Reconciler) -> None:
    reconciler.alerts.close(timeout=10.0)
    reconciler.backends.close()
    reconciler.store.close()
