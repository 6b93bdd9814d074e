"""The psrp backend: a CmdletRunner on pypsrp to a Windows PowerShell gateway (or `stagectl sim-gateway`)."""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, Self, TypeVar
from xml.etree import ElementTree as ET

import requests
import urllib3
from pydantic import Field, model_validator
from pypsrp import exceptions as pypsrp_errors
from pypsrp.complex_objects import PSInvocationState
from pypsrp.messages import Message
from pypsrp.powershell import Fragmenter, PowerShell, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import WSMan

from controller import fence, secrets
from controller.desired.models import Model, SecretRef
from controller.exchange import errors, psrp_values
from controller.exchange.runner import CmdletOutput

# Get-MigrationBatch / Get-MigrationUser return 1,000 objects unless told otherwise (contract §1).
UNLIMITED_CMDLETS = frozenset({"Get-MigrationBatch", "Get-MigrationUser"})

_Result = TypeVar("_Result")
_Phase = Literal["open", "send", "receive"]

# MS-PSRP 2.2.4 fragment header: ObjectId, FragmentId, flags (0x1 start, 0x2 end), BlobLength.
_FRAGMENT_HEADER = struct.Struct(">QQBI")
_FRAGMENT_END = 0x2
_STATE_NAMES = {
    PSInvocationState.NOT_STARTED: "NotStarted",
    PSInvocationState.RUNNING: "Running",
    PSInvocationState.STOPPING: "Stopping",
    PSInvocationState.STOPPED: "Stopped",
    PSInvocationState.DISCONNECTED: "Disconnected",
}


def _refused(error: requests.exceptions.RequestException) -> bool:
    """The connection was refused or could not be made: the request never left."""
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


class PsrpSettings(Model):
    """How to reach the PowerShell gateway; secrets only as env:NAME / file:PATH references."""

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535, description="default 5986 with ssl, 5985 without")
    path: str = "wsman"
    ssl: bool = True
    cert_validation: bool = True
    ca_bundle: str | None = Field(
        default=None, description="PEM file of the CA(s) that signed the gateway's cert"
    )
    auth: Literal["basic", "negotiate", "ntlm", "kerberos", "credssp", "certificate"] = "negotiate"
    username: str | None = Field(default=None, description="a user name is not a secret; or usernameRef")
    username_ref: SecretRef | None = None
    password_ref: SecretRef | None = None
    credentials_ref: SecretRef | None = Field(default=None, description="one secret holding USER:PASSWORD")
    certificate_pem: str | None = Field(default=None, description="auth certificate: client certificate file")
    certificate_key_pem: str | None = Field(
        default=None, description="auth certificate: its private key file"
    )
    configuration_name: str = Field(
        default="Microsoft.PowerShell", description="the (JEA) session configuration"
    )
    bootstrap: Literal["connect-exchangeonline", "none"] = "connect-exchangeonline"
    app_id: str | None = None
    certificate_thumbprint: str | None = None
    organization: str | None = Field(default=None, description="the tenant's primary .onmicrosoft.com domain")
    operation_timeout: int = Field(default=20, ge=1, le=600, description="seconds a WSMan Receive may wait")
    connection_timeout: int = Field(default=30, ge=1, le=600)
    read_timeout: int = Field(default=30, ge=1, le=600, description="must exceed operationTimeout")
    max_envelope_size: int = Field(default=153600, ge=8192, description="bytes; pypsrp raises the default")

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.bootstrap == "connect-exchangeonline":
            missing = [
                n for n in ("app_id", "certificate_thumbprint", "organization") if not getattr(self, n)
            ]
            if missing:
                raise ValueError(
                    f"bootstrap connect-exchangeonline needs {', '.join(missing)} (or bootstrap: none)"
                )
        if self.read_timeout <= self.operation_timeout:
            raise ValueError("readTimeout must exceed operationTimeout")
        if self.auth == "certificate" and not (self.certificate_pem and self.certificate_key_pem):
            raise ValueError("auth certificate needs certificatePem and certificateKeyPem")
        return self

    @property
    def endpoint(self) -> str:
        port = self.port or (5986 if self.ssl else 5985)
        return f"{'https' if self.ssl else 'http'}://{self.host}:{port}/{self.path}"


class _CheckedFragmenter(Fragmenter):
    """pypsrp's defragmenter, also noting the ObjectId of each message it completes, in arrival order.

    pypsrp raises on a fragment out of sequence within a message, but it neither notices a message whose end
    never came (its start waits in `incoming_buffer` for ever) nor a message that came twice (its output is
    appended twice). Both are visible here. A whole message that never came is not: ObjectIds increase per
    sender but are not contiguous per pipeline (Windows PowerShell numbers them process-wide).
    """

    def __init__(self, max_size: int, serializer: Serializer) -> None:
        super().__init__(max_size, serializer)
        self.completed: list[int] = []

    def defragment(self, data: bytes) -> list[Message]:
        offset = 0
        while offset + _FRAGMENT_HEADER.size <= len(data):
            object_id, _, flags, length = _FRAGMENT_HEADER.unpack_from(data, offset)
            if flags & _FRAGMENT_END:
                self.completed.append(object_id)
            offset += _FRAGMENT_HEADER.size + length
        return super().defragment(data)

    def incomplete(self, state: int) -> str | None:
        """Why the pipeline that ended in `state` may not have delivered all it wrote; None if it did."""
        if state not in (PSInvocationState.COMPLETED, PSInvocationState.FAILED):
            return f"the pipeline ended {_STATE_NAMES.get(state, str(state))}, not Completed"
        if self.incoming_buffer:
            return f"{len(self.incoming_buffer)} message(s) arrived only in part"
        ids = self.completed
        if any(later <= earlier for earlier, later in itertools.pairwise(ids)):
            return "a message arrived twice or out of order"
        return None


class PsrpRunner:
    """CmdletRunner over one pypsrp RunspacePool, opened on first use and reused until close().

    `warnings` collects the warning stream's messages (e.g. "Micro delay applied…") for the client to log;
    each call's output list also carries its own in `.warnings`, as the simulator's output does.
    """

    def __init__(self, settings: PsrpSettings) -> None:
        self.settings = settings
        self.warnings: list[str] = []
        self._wsman: WSMan | None = None
        self._pool: RunspacePool | None = None
        self._fragmenter: _CheckedFragmenter | None = None
        self._keys_exchanged = False

    # --- connection -----------------------------------------------------------------------------------------

    def _credentials(self) -> tuple[str | None, str | None]:
        s = self.settings
        if s.credentials_ref:
            credential = secrets.credential(s.credentials_ref)
            return credential.username, credential.password
        user = secrets.resolve(s.username_ref) if s.username_ref else s.username
        password = secrets.resolve(s.password_ref) if s.password_ref else None
        return user, password

    def _open(self) -> RunspacePool:
        s = self.settings
        user, password = self._credentials()
        validation: bool | str = s.cert_validation
        if s.cert_validation and s.ca_bundle:
            validation = str(Path(s.ca_bundle).expanduser())  # requests verifies against this bundle only
        certificate = s.auth == "certificate"
        wsman = WSMan(
            s.host,
            port=s.port,
            username=user,
            password=password,
            ssl=s.ssl,
            path=s.path,
            auth=s.auth,
            # pypsrp annotates cert_validation as bool, yet hands it to requests' `verify` as it is, and
            # requests takes a CA bundle path there too: the path is what pins the gateway's CA.
            cert_validation=validation,  # type: ignore[arg-type]
            connection_timeout=s.connection_timeout,
            read_timeout=s.read_timeout,
            operation_timeout=s.operation_timeout,
            max_envelope_size=s.max_envelope_size,
            # Basic over plain HTTP: only the loopback simulator; message encryption needs NTLM/Kerberos.
            encryption="never" if (not s.ssl and s.auth in ("basic", "certificate")) else "auto",
            no_proxy=s.host in ("127.0.0.1", "localhost", "::1"),
            certificate_pem=s.certificate_pem if certificate else None,
            certificate_key_pem=s.certificate_key_pem if certificate else None,
        )
        pool = RunspacePool(wsman, configuration_name=s.configuration_name)
        # The pool's own serializer: it holds the session key that secure strings are decrypted with.
        self._fragmenter = _CheckedFragmenter(wsman.max_payload_size, pool._serializer)
        pool._fragmenter = self._fragmenter
        self._wsman, self._pool, self._keys_exchanged = wsman, pool, False
        try:
            self._transport(pool.open)
        except errors.ExchangeError:
            self._drop()
            raise
        if s.bootstrap == "connect-exchangeonline":
            # App-only certificate auth inside the gateway's session, sent as a cmdlet with parameters.
            # A sign-in that failed leaves no session behind: the next call opens one and signs in again,
            # never running a cmdlet in a session that is not signed in.
            try:
                self._invoke(
                    "Connect-ExchangeOnline",
                    {
                        "AppId": s.app_id,
                        "CertificateThumbprint": s.certificate_thumbprint,
                        "Organization": s.organization,
                        "ShowBanner": False,
                    },
                )
            except errors.ExchangeError:
                with contextlib.suppress(errors.ExchangeError):
                    self._transport(pool.close)
                self._drop()
                raise
        return pool

    def _drop(self) -> None:
        """Forget a broken pool so that the next call opens a new one."""
        wsman, self._pool, self._wsman, self._fragmenter = self._wsman, None, None, None
        if wsman is not None:
            with contextlib.suppress(Exception):  # closing a broken transport may fail again
                wsman.close()

    def _transport(self, call: Callable[[], _Result], *, phase: _Phase = "open") -> _Result:
        """Run a pypsrp call, turning transport failures into the Exchange layer's errors.

        `phase` says whether a cmdlet may have run when the call fails: "open" (the pool, the sign-in,
        closing: no cmdlet of the caller's was sent), "send" (the Command and its Sends: a fault or a busy
        answer refused it, but a lost reply leaves it unknown) or "receive" (the cmdlet ran or runs: any
        failure leaves its effect unknown). Unknown is an `IndeterminateError`, never retried for a write.
        """
        endpoint = self.settings.endpoint
        try:
            return call()
        except pypsrp_errors.AuthenticationError:
            self._drop()
            raise errors.AuthenticationError(
                f"the PowerShell gateway at {endpoint} refused the credentials ({self.settings.auth} auth)"
            ) from None
        except requests.exceptions.SSLError as error:
            self._drop()
            reason = (
                "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(error) else "TLS failed"
            )
            raise errors.PermanentError(
                f"TLS to the PowerShell gateway at {endpoint} failed ({reason}); "
                "set caBundle to the CA that signed its certificate"
            ) from None
        except requests.exceptions.RequestException as error:  # refused, reset, timed out, cut short
            self._drop()
            # A connection never made carried nothing; a reply that never came may follow a cmdlet that ran.
            never_sent = isinstance(error, requests.exceptions.ConnectTimeout) or _refused(error)
            raise self._lost(
                "open" if never_sent else phase,
                f"cannot reach the PowerShell gateway at {endpoint}: {type(error).__name__}",
            ) from None
        except pypsrp_errors.WinRMTransportError as error:
            self._drop()
            if error.code in (429, 503) and phase != "receive":
                raise errors.ThrottledError(
                    f"the PowerShell gateway at {endpoint} is busy (HTTP {error.code})"
                ) from None
            raise self._lost(
                phase, f"the PowerShell gateway at {endpoint} answered HTTP {error.code}"
            ) from None
        except pypsrp_errors.WSManFaultError as error:
            self._drop()
            # A fault is the gateway's answer: to a Command it means the pipeline was not created.
            raise self._lost(
                "open" if phase == "send" else phase,
                f"the PowerShell gateway at {endpoint} faulted: {error.code} {error.reason or ''}",
            ) from None
        except (
            pypsrp_errors.InvalidRunspacePoolStateError,
            pypsrp_errors.WinRMError,
            ET.ParseError,
        ) as error:
            self._drop()
            raise self._lost(phase, f"the session to {endpoint} broke: {type(error).__name__}") from None

    @staticmethod
    def _lost(phase: _Phase, message: str) -> errors.UnavailableError:
        if phase == "open":
            return errors.UnavailableError(message)
        return errors.IndeterminateError(f"{message}; the call may have run: the next observation decides")

    # --- CmdletRunner ---------------------------------------------------------------------------------------

    def run(
        self, cmdlet: str, parameters: Mapping[str, object], select: Sequence[str] = ()
    ) -> list[dict[str, object]]:
        if self._pool is None:
            try:
                self._open()
            except errors.IndeterminateError as error:  # the sign-in's answer was lost, not this cmdlet's
                raise errors.UnavailableError(str(error).partition("; the call may have run")[0]) from None
        if cmdlet in UNLIMITED_CMDLETS and "ResultSize" not in parameters and "Identity" not in parameters:
            parameters = {**parameters, "ResultSize": "Unlimited"}
        return self._invoke(cmdlet, parameters, select)

    def _invoke(
        self, cmdlet: str, parameters: Mapping[str, object], select: Sequence[str] = ()
    ) -> list[dict[str, object]]:
        pool, fragmenter = self._pool, self._fragmenter
        assert pool is not None and fragmenter is not None
        if not self._keys_exchanged and any(isinstance(v, secrets.Credential) for v in parameters.values()):
            self._transport(pool.exchange_keys)  # a PSCredential's SecureString needs the session key
            self._keys_exchanged = True
        shell = PowerShell(pool)
        shell.add_cmdlet(cmdlet)
        for name, value in parameters.items():
            shell.add_parameter(name, psrp_values.to_clixml(value))
        if select:  # a second command of the same pipeline, not script text
            shell.add_cmdlet("Select-Object").add_parameter("Property", list(select))
        fragmenter.completed.clear()
        fence.check()  # after the pool was (re)opened and the keys exchanged, right before the command
        self._transport(shell.begin_invoke, phase="send")
        output = self._transport(shell.end_invoke, phase="receive")
        # A short read taken for the truth makes the planner act on rows that exist but did not arrive:
        # whatever may have lost output is a transport failure (the kind read stays unknown), never a result.
        problem = fragmenter.incomplete(shell.state)
        if problem is not None:
            self._drop()  # a half-assembled message would also poison the next call's output
            raise errors.IndeterminateError(
                f"{cmdlet} through the gateway at {self.settings.endpoint} did not complete: {problem}; "
                "it may have run: the next observation decides"
            )
        # str(record) is 'None' for a pypsrp warning record: the text is in .message.
        warned = [str(record.message) for record in shell.streams.warning]
        self.warnings.extend(warned)
        # invoke() does not raise on a terminating error (state FAILED) and a non-terminating error leaves
        # had_errors False: the error stream is the only reliable signal.
        if shell.streams.error:
            raise psrp_values.record_error(cmdlet, shell.streams.error[0])
        if shell.state == PSInvocationState.FAILED:
            raise errors.CmdletError(
                cmdlet, "PipelineFailedException", "the pipeline failed without an error record"
            )
        return CmdletOutput([psrp_values.output_row(item) for item in output], warnings=warned)

    def close(self) -> None:
        pool = self._pool
        if pool is not None:
            with contextlib.suppress(errors.ExchangeError):  # the gateway is gone already
                self._transport(pool.close)
        self._drop()
