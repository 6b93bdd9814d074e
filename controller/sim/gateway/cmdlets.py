"""One gateway pipeline: bind its parameters, run the cmdlet, shape output objects and error records."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from psrpcore import PowerShell
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorDetails,
    ErrorRecord,
    NETException,
    PSCustomObject,
    PSNoteProperty,
    PSObject,
    PSSecureString,
)

from controller.exchange import errors
from controller.secrets import Credential

# The cmdlets the controller uses (exchange-facts §1-§4); anything else is CommandNotFound, as in a JEA
# endpoint or a session whose role does not include it.
DEFAULT_CMDLETS = frozenset(
    {
        "Get-MigrationBatch",
        "New-MigrationBatch",
        "Set-MigrationBatch",
        "Start-MigrationBatch",
        "Stop-MigrationBatch",
        "Complete-MigrationBatch",
        "Remove-MigrationBatch",
        "Get-MigrationUser",
        "Remove-MigrationUser",
        "Get-MigrationUserStatistics",
        "Get-MigrationEndpoint",
        "New-MigrationEndpoint",
        "Set-MigrationEndpoint",
        "Remove-MigrationEndpoint",
        "Test-MigrationServerAvailability",
        "Get-MigrationConfig",
        "Get-MailUser",
        "Get-Mailbox",
        "Get-Recipient",
    }
)

# Exception types a client treats as "slow down" (see psrp.THROTTLING_TYPES).
SERVER_BUSY_TYPE = "ServerBusyException"
REDACTED = "<redacted>"


@dataclass(frozen=True, slots=True)
class ReceivedCall:
    """One cmdlet invocation as the gateway received it (Credential passwords redacted); `at` is when, on
    the monotonic clock (calls per minute)."""

    cmdlet: str
    parameters: dict[str, object]
    at: float = field(default_factory=time.monotonic, compare=False, repr=False)


@dataclass(slots=True)
class Outcome:
    """Everything one pipeline writes: output objects, warnings, non-terminating errors, a terminating one."""

    cmdlet: str = ""
    output: list[PSObject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)
    terminating: ErrorRecord | None = None


class BindingError(Exception):
    """A parameter the gateway cannot hand to a runner; becomes a ParameterBindingException record."""


def to_python(value: object) -> object:
    """A deserialised CLIXML parameter value as plain runner data (see runner.py)."""
    if value is None:
        return True  # AddParameter("Switch") arrives without a value: the switch is present
    if isinstance(value, bool):
        return value
    if isinstance(value, dt.datetime):
        moment = dt.datetime(*value.timetuple()[:6], value.microsecond, tzinfo=value.tzinfo)
        return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, PSSecureString):
        return str(value.decrypt())
    if isinstance(value, list | tuple):
        return [to_python(item) for item in value]
    if isinstance(value, PSObject) and any(t.endswith("PSCredential") for t in value.PSObject.type_names):
        password = value.Password
        secret = str(password.decrypt()) if isinstance(password, PSSecureString) else str(password)
        return Credential(str(value.UserName), secret)
    kind = value.PSObject.type_names[0] if isinstance(value, PSObject) else type(value).__name__
    raise BindingError(f"a value of type {kind}")


def redact(parameters: Mapping[str, object]) -> dict[str, object]:
    """The parameters as recorded: a Credential keeps its user name, never its password."""
    return {
        name: Credential(value.username, REDACTED) if isinstance(value, Credential) else value
        for name, value in parameters.items()
    }


def to_ps(value: object) -> object:
    """A runner output value as something psrpcore serialises with the same meaning."""
    if isinstance(value, Mapping):
        return PSCustomObject(**{str(k): to_ps(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return [to_ps(item) for item in value]
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def output_object(cmdlet: str, row: Mapping[str, object]) -> PSObject:
    """An Exchange-like output object: the row's keys as adapted properties, as Exchange objects have."""
    obj = PSObject()
    noun = cmdlet.partition("-")[2] or cmdlet
    obj.PSObject.type_names = [f"Microsoft.Exchange.Data.Storage.Management.{noun}", "System.Object"]
    for name, value in row.items():
        obj.PSObject.adapted_properties.append(PSNoteProperty(str(name), value=to_ps(value)))
    identity = row.get("Identity", row.get("Name"))
    if identity is not None:
        obj.PSObject.to_string = str(identity)
    return obj


def error_record(
    *,
    cmdlet: str,
    exception_type: str,
    message: str,
    failure_category: str | None = None,
    category: ErrorCategory = ErrorCategory.NotSpecified,
    fully_qualified_id: str | None = None,
    recommended_action: str | None = None,
) -> ErrorRecord:
    """An ErrorRecord shaped as EXO shows one (exchange-facts §9.0): type, message, [FailureCategory=…] id."""
    exception = NETException(Message=message)
    exception.PSObject.type_names = [exception_type, "System.Exception", "System.Object"]
    short_type = exception_type.rpartition(".")[2]
    if fully_qualified_id is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%m/%d/%Y %I:%M:%S %p")
        request = uuid.uuid4()
        failure = failure_category or f"Cmdlet-{short_type}"
        handler = "Microsoft.Exchange.Management.Migration." + cmdlet.replace("-", "")
        fully_qualified_id = (
            f"[Server=SIMGATEWAY,RequestId={request},TimeStamp={stamp}] [FailureCategory={failure}] "
            f"{request.int & 0xFFFFFFFF:08X},{handler}"
        )
    return ErrorRecord(
        Exception=exception,
        CategoryInfo=ErrorCategoryInfo(Category=category, Activity=cmdlet, Reason=short_type, TargetName=""),
        FullyQualifiedErrorId=fully_qualified_id,
        ErrorDetails=ErrorDetails(Message=message, RecommendedAction=recommended_action)
        if recommended_action
        else None,
    )


def script_refused(text: str) -> ErrorRecord:
    """What a NoLanguage (Exchange/JEA) runspace answers to AddScript or a script block."""
    return error_record(
        cmdlet="",
        exception_type="System.Management.Automation.ParseException",
        message=(
            "The syntax is not supported by this runspace. "
            "This can occur if the runspace is in no-language mode."
        ),
        category=ErrorCategory.ParserError,
        fully_qualified_id="ScriptsNotAllowed",
    )


def command_not_found(name: str) -> ErrorRecord:
    """PowerShell's CommandNotFoundException for a name the session does not expose."""
    return error_record(
        cmdlet=name,
        exception_type="System.Management.Automation.CommandNotFoundException",
        message=(
            f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or "
            "operable program. Check the spelling of the name, or if a path was included, verify that the "
            "path is correct and try again."
        ),
        category=ErrorCategory.ObjectNotFound,
        fully_qualified_id="CommandNotFoundException",
    )


def binding_failed(cmdlet: str, detail: str) -> ErrorRecord:
    return error_record(
        cmdlet=cmdlet,
        exception_type="System.Management.Automation.ParameterBindingException",
        message=f"Cannot bind parameter for {cmdlet}: the gateway does not accept {detail}.",
        category=ErrorCategory.InvalidArgument,
        fully_qualified_id=f"ParameterBindingFailed,{cmdlet}",
    )


def from_exchange_error(cmdlet: str, error: errors.ExchangeError) -> tuple[ErrorRecord, bool]:
    """The record for a runner error and whether it terminates the pipeline.

    A not-found on a Get- is non-terminating as in Exchange (the pipeline completes, the record is in the
    error stream); state and validation errors of Set-/Start-/New-… are terminating (the pipeline fails).
    """
    if isinstance(error, errors.ThrottledError):
        delay = f"Retry after {error.delay:g} seconds." if error.delay is not None else None
        record = error_record(
            cmdlet=cmdlet,
            exception_type=SERVER_BUSY_TYPE,
            message=str(error),
            category=ErrorCategory.ResourceBusy,
            recommended_action=delay,
        )
        return record, True
    if isinstance(error, errors.CmdletError):
        record = error_record(
            cmdlet=cmdlet,
            exception_type=error.exception_type,
            message=error.remote_message,
            failure_category=error.category or None,
        )
        return record, not (error.not_found and cmdlet.startswith("Get-"))
    if isinstance(error, errors.TransientError):
        return error_record(
            cmdlet=cmdlet, exception_type="MigrationTransientException", message=str(error)
        ), True
    return error_record(cmdlet=cmdlet, exception_type="MigrationPermanentException", message=str(error)), True


def bind(command_parameters: list[tuple[str | None, object]], cmdlet: str) -> dict[str, object]:
    """Named parameters as runner data; a positional argument is refused (the client never sends one)."""
    bound: dict[str, object] = {}
    for name, value in command_parameters:
        if not name:
            raise BindingError("positional arguments")
        bound[name.lstrip("-")] = to_python(value)
    return bound


def describe(pipeline: PowerShell) -> tuple[str | None, list[tuple[str | None, object]], ErrorRecord | None]:
    """The one cmdlet of a pipeline with its raw parameters, or the record refusing the pipeline.

    A second command is accepted only as `Select-Object -Property <names>` (see `selected`).
    """
    commands = pipeline.commands
    if any(command.is_script for command in commands):
        return None, [], script_refused(commands[0].command_text)
    if len(commands) == 2 and selected(pipeline) is not None:
        return commands[0].command_text, list(commands[0].parameters), None
    if len(commands) != 1:
        first = commands[0].command_text if commands else ""
        return None, [], binding_failed(first, "more than one command in a pipeline")
    return commands[0].command_text, list(commands[0].parameters), None


def selected(pipeline: PowerShell) -> tuple[str, ...] | None:
    """The property names of a trailing `Select-Object -Property a,b`, or None when there is none."""
    commands = pipeline.commands
    if len(commands) != 2 or commands[1].command_text.lower() != "select-object":
        return None
    parameters = list(commands[1].parameters)
    if len(parameters) != 1 or (parameters[0][0] or "").lstrip("-").lower() != "property":
        return None
    names = to_python(parameters[0][1])
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        return None
    return tuple(str(n) for n in names)
