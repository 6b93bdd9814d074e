"""The controller's own configuration file (YAML, validated like the desired state, secrets by reference)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from controller import errors
from controller.desired import yamlsafe
from controller.desired.models import Duration, Model, SecretRef


class VerifyConfig(Model):
    """Commit signature verification: an SSH allowed-signers file or a GnuPG home."""

    allowed_signers: str | None = None
    gpg_home: str | None = None


class WebhookConfig(Model):
    """`stagectl run` listens for the git host's push events and passes at once (a remote repository)."""

    listen: str = Field(
        default="127.0.0.1:8090", description="address:port; loopback unless a proxy or the host needs more"
    )
    secret_ref: SecretRef = Field(description="the webhook's shared secret: env:NAME or file:PATH")

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _, colon, port = value.rpartition(":")
        if not colon or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"listen must be address:port, not {value!r}")
        return value


class SourceConfig(Model):
    repo: str = Field(description="a local repository path or a remote URL")
    branch: str = "main"
    desired_dir: str = "desired"
    verify: VerifyConfig | None = None
    webhook: WebhookConfig | None = None


class ExchangeConfig(Model):
    backend: Literal["sim", "psrp"]
    state: str | None = Field(default=None, description="sim: the simulator's state file")
    psrp: dict[str, Any] | None = Field(default=None, description="psrp: the gateway settings (PsrpSettings)")


class DnsConfig(Model):
    backend: Literal["sim", "rfc2136"]
    state: str | None = Field(default=None, description="sim: the DNS simulator's state file")
    rfc2136: dict[str, Any] | None = Field(
        default=None, description="rfc2136: servers and TSIG key references"
    )


class AlertSink(Model):
    type: Literal["webhook", "teams", "slack"]
    url_ref: SecretRef = Field(description="webhook URLs carry tokens: env:NAME or file:PATH")
    secret_ref: SecretRef | None = Field(default=None, description="webhook: HMAC-SHA256 signing secret")


class PublishConfig(Model):
    """Where each pass also writes its snapshot for CI to plan pull requests against (issue 15)."""

    snapshot: str | None = Field(
        default=None, description="a path (a share or a directory a web server serves); replaced atomically"
    )


class NotesConfig(Model):
    """What each pass did, as git notes under refs/notes/stagectl on the commits that asked for it."""

    enabled: bool = True
    push: bool = Field(default=True, description="a remote source: push the notes (a failure is a warning)")


class WebConfig(Model):
    """The migration page (`stagectl run --http`, `stagectl serve`, docs/web.md)."""

    listen: str | None = Field(
        default=None, description="[address:]port; loopback unless an address is written; unset: only --http"
    )
    commit_url: str | None = Field(
        default=None, description="a commit's address, {sha} replaced: https://git.example/repo/commit/{sha}"
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None and not value.rpartition(":")[2].isdigit():
            raise ValueError(f"listen must be [address:]port, not {value!r}")
        return value

    @field_validator("commit_url")
    @classmethod
    def _commit_url(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith(("https://", "http://")) or "{sha}" not in value):
            raise ValueError("commitUrl must be an http(s) address holding {sha}")
        return value


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class EtcdConfig(Model):
    """The etcd cluster that elects one leader per tenant and holds the state a standby resumes from."""

    endpoints: list[str] = Field(min_length=1, description="client URLs of the members: https://host:2379")
    ca_bundle: str | None = Field(default=None, description="PEM file of the CA that signed the members")
    certificate_pem: str | None = Field(default=None, description="client certificate file (mutual TLS)")
    certificate_key_pem: str | None = Field(default=None, description="its private key file")
    username: str | None = Field(default=None, description="etcd's own authentication: a user name")
    password_ref: SecretRef | None = Field(default=None, description="its password: env:NAME, file:PATH")
    timeout: Duration = Field(default=timedelta(seconds=2), description="one request to one member")

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, values: list[str]) -> list[str]:
        for value in values:
            scheme, _, rest = value.partition("://")
            if scheme not in ("https", "http") or not rest.rpartition(":")[2].rstrip("/").isdigit():
                raise ValueError(f"an endpoint is https://host:port (or http:// on loopback), not {value!r}")
        return values

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> EtcdConfig:
        if (self.certificate_pem is None) != (self.certificate_key_pem is None):
            raise ValueError("certificatePem and certificateKeyPem go together: a certificate and its key")
        if (self.username is None) != (self.password_ref is None):
            raise ValueError("username and passwordRef go together: etcd's user and its password")
        if self.certificate_pem is not None and self.username is not None:
            # etcd 3.4's JSON gateway refuses a request that carries both (docs/ha.md).
            raise ValueError("choose a client certificate or an etcd user, not both: etcd refuses both")
        return self


class CoordinationConfig(Model):
    """High availability and many tenants (docs/ha.md): absent, one process holds the state directory's
    file lock; present, instances elect one leader per tenant through an etcd lease."""

    etcd: EtcdConfig
    tenant: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="the tenant's name in etcd; default: the file's name"
    )
    instance: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="this instance's name; default: host-pid (--instance)"
    )
    lease_ttl: Duration = Field(default=timedelta(seconds=10), description="how long a dead leader holds on")
    prefix: str = Field(default="/stagectl", pattern=r"^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$")

    @field_validator("lease_ttl")
    @classmethod
    def _ttl(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=3) <= value <= timedelta(seconds=300) or value.microseconds:
            raise ValueError("leaseTtl is whole seconds from 3s to 300s")
        return value

    @model_validator(mode="after")
    def _keep_alive_fits(self) -> CoordinationConfig:
        # A keep-alive goes every third of the TTL; one member that does not answer costs a whole timeout.
        if self.etcd.timeout * 3 > self.lease_ttl:
            raise ValueError(
                f"etcd.timeout ({self.etcd.timeout.total_seconds():g}s) must be at most a third of leaseTtl "
                f"({self.lease_ttl.total_seconds():g}s), or one slow member makes every leader step down"
            )
        return self


class ControllerConfig(Model):
    api_version: Literal["stagectl/v1"]
    kind: Literal["ControllerConfig"]
    source: SourceConfig | None = None
    state_dir: str
    exchange: ExchangeConfig
    dns: DnsConfig
    clock: Literal["system", "sim"] = Field(
        default="system", description="sim: the Exchange simulator's clock"
    )
    interval: Duration = timedelta(seconds=60)
    alerts: list[AlertSink] = Field(default_factory=list)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_address: str = Field(default="127.0.0.1", description="0.0.0.0 to let another host scrape")
    web: WebConfig = WebConfig()
    publish: PublishConfig = PublishConfig()
    notes: NotesConfig = NotesConfig()
    coordination: CoordinationConfig | None = None
    base_dir: str = Field(
        default=".", exclude=True, description="set by the loader: relative paths start here"
    )
    name: str = Field(default="stagectl", exclude=True, description="set by the loader: the file's name")

    def path(self, value: str) -> Path:
        """A path from the file, relative to the file's directory."""
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else Path(self.base_dir) / candidate


def load_config(path: Path) -> ControllerConfig:
    """Read and validate the configuration; every problem as `file:line:column: message`."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise errors.InvalidInput(f"{path}: cannot read the configuration: {error.strerror}") from None
    try:
        documents = list(yamlsafe.load_documents(text))
    except yamlsafe.YamlError as error:
        raise errors.InvalidInput(f"{path}:{error.line}:{error.column}: {error.message}") from None
    if len(documents) != 1 or not isinstance(documents[0].data, dict):
        raise errors.InvalidInput(f"{path}: the configuration must be one YAML mapping")
    document = documents[0]
    try:
        config = ControllerConfig.model_validate(document.data)
    except ValidationError as error:
        problems = _locate(error, document, path)
        raise errors.InvalidInput(
            f"{path}: {len(problems)} problems in the configuration", problems
        ) from None
    problems = _backend_problems(config, document, path)
    if problems:
        raise errors.InvalidInput(f"{path}: {len(problems)} problems in the configuration", problems)
    return config.model_copy(update={"base_dir": str(path.parent.resolve()), "name": path.stem})


def _backend_problems(config: ControllerConfig, document: yamlsafe.Document, path: Path) -> list[str]:
    """The backend sections are checked here, with their lines, not when a backend is first opened."""
    sections: list[tuple[tuple[str, str], type[BaseModel], dict[str, Any]]] = []
    if config.exchange.backend == "psrp":
        from controller.exchange.psrp import PsrpSettings

        sections.append((("exchange", "psrp"), PsrpSettings, config.exchange.psrp or {}))
    if config.dns.backend == "rfc2136":
        from controller.dns.settings import Rfc2136Settings

        sections.append((("dns", "rfc2136"), Rfc2136Settings, config.dns.rfc2136 or {}))
    problems: list[str] = []
    for prefix, model, data in sections:
        try:
            model.model_validate(data)
        except ValidationError as error:
            problems += _locate(error, document, path, prefix=prefix)
    return problems


def _locate(
    error: ValidationError, document: yamlsafe.Document, path: Path, *, prefix: tuple[str, ...] = ()
) -> list[str]:
    """Each pydantic error as `file:line:column: dotted.path: message`, at the YAML node at fault."""
    problems = []
    for item in error.errors():
        loc = (*prefix, *item["loc"])
        line, column = document.position(loc, key=item["type"] == "extra_forbidden")
        where = ".".join(str(part) for part in loc) or "document"
        problems.append(f"{path}:{line}:{column}: {where}: {item['msg'].removeprefix('Value error, ')}")
    return problems
