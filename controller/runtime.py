"""Build a Reconciler from the controller configuration: source, store, audit log, backends, alert sinks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from controller import alerts, audit, errors
from controller.backends import open_backends
from controller.config import ControllerConfig
from controller.reconciler import Reconciler
from controller.source import GitSource, SignaturePolicy
from controller.store import Store


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


def sinks_of(config: ControllerConfig) -> list[alerts.AlertSink]:
    sinks: list[alerts.AlertSink] = []
    for sink in config.alerts:
        url = alerts.resolve_secret(sink.url_ref)
        if sink.type == "webhook":
            sinks.append(alerts.WebhookSink(url=url, secret_ref=sink.secret_ref))
        elif sink.type == "teams":
            sinks.append(alerts.TeamsSink(url=url))
        else:
            sinks.append(alerts.SlackSink(url=url))
    return sinks


def build(config: ControllerConfig, *, should_stop: Callable[[], bool] = lambda: False) -> Reconciler:
    state_dir: Path = config.path(config.state_dir)
    return Reconciler(
        config=config,
        source=source_of(config),
        store=Store.open(state_dir),
        audit=audit.AuditLog(audit.path_in(state_dir)),
        backends=open_backends(exchange=None, dns=None, config=config),
        alerts=alerts.AlertDispatcher(sinks_of(config)),
        should_stop=should_stop,
    )


def close(reconciler: Reconciler) -> None:
    reconciler.alerts.close(timeout=10.0)
    reconciler.backends.close()
    reconciler.store.close()
