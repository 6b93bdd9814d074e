"""pypsrp values both ways: runner data → CLIXML parameters; output objects and error records back."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree as ET

from pypsrp.complex_objects import GenericComplexObject, PSCredential
from pypsrp.serializer import TaggedValue

from controller.exchange import errors
from controller.secrets import Credential

# Exception types (short names) that mean "slow down and retry": the gateway's ServerBusyException, RPS-era
# budget exceptions, and the names the EXO module surfaces for HTTP 429 in REST mode.
THROTTLING_TYPES = frozenset(
    {"ServerBusyException", "OverBudgetException", "ThrottlingException", "TooManyRequestsException"}
)
# The session broke under us (token expiry closes the runspace, exchange-facts §9.4): reconnect and retry.
SESSION_TYPES = frozenset(
    {"InvalidRunspaceStateException", "PSRemotingTransportException", "PSRemotingDataStructureException"}
)
TRANSIENT_TYPES = frozenset({"MigrationTransientException"})
_FAILURE_CATEGORY = re.compile(r"\[FailureCategory=([^\]\s]+)\]")
_RETRY_AFTER = re.compile(r"Retry after (\d+(?:\.\d+)?) seconds")
_INT32 = range(-(2**31), 2**31)
# pypsrp hands a CLIXML DateTime (<DT>) back as its text; .NET writes 7 fractional digits.
_CLIXML_DATETIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_datetime(text: str) -> dt.datetime | None:
    """A CLIXML DateTime text as an aware UTC datetime (no zone: UTC), or None if it is not one."""
    match = _CLIXML_DATETIME.match(text)
    if match is None:
        return None
    base, fraction, zone = match.groups()
    stamp = base + (f".{(fraction or '')[:6].ljust(6, '0')}" if fraction else "")
    offset = "+00:00" if zone in (None, "Z") else zone
    try:
        return dt.datetime.fromisoformat(stamp + offset).astimezone(dt.UTC)
    except ValueError:
        return None


def to_clixml(value: object) -> object:
    """A runner parameter value in the form pypsrp serialises with the right CLIXML type."""
    if isinstance(value, Credential):
        # The password travels as a SecureString encrypted with the session key (exchange_keys first).
        # pypsrp leaves PSCredential.__init__(**kwargs) unannotated; the keywords are its documented ones.
        return PSCredential(username=value.username, password=value.password)  # type: ignore[no-untyped-call]
    if isinstance(value, bool | str | bytes):
        return value  # B, S, BA (Byte[]): pypsrp picks these from the Python type
    if isinstance(value, int):
        return value if value in _INT32 else TaggedValue("I64", value)
    if isinstance(value, dt.datetime):
        # pypsrp has no DateTime serialiser (it would send a string); hand it the CLIXML element itself.
        element = ET.Element("DT")
        moment = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        element.text = moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        return element
    if isinstance(value, list | tuple):
        return [to_clixml(item) for item in value]
    raise TypeError(f"no CLIXML form for a {type(value).__name__} parameter")


def to_python(value: Any) -> object:
    """An output value as plain data: objects become dicts of adapted + extended properties."""
    if isinstance(value, GenericComplexObject):
        properties = {**value.adapted_properties, **value.extended_properties}
        if properties:
            return {str(name): to_python(item) for name, item in properties.items()}
        # an enum or other value-like object (e.g. Status): its string form is what Exchange shows
        if value.to_string is not None:
            return str(value.to_string)
        return to_python(value.property_sets[0]) if value.property_sets else None
    if isinstance(value, list | tuple):
        return [to_python(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, str):
        # Exchange's string properties are names, addresses and messages; only a DateTime looks like this.
        moment = parse_datetime(value)
        return value if moment is None else moment
    return value


def output_row(value: Any) -> dict[str, object]:
    """One output object as a row; a bare primitive becomes {"Value": it}."""
    converted = to_python(value)
    return converted if isinstance(converted, dict) else {"Value": converted}


def _type_names(obj: Any) -> list[str]:
    names = list(getattr(obj, "types", None) or [])
    return [name.removeprefix("Deserialized.") for name in names]


_MAX_DETAILS = 16


def _details(record: Any, exception: Any) -> tuple[str, ...]:
    """The record's texts beside the message, where an Exchange resource key may travel (exchange.refusals):
    ErrorDetails' message and the string properties of the exception and its inner exceptions, a few levels
    deep. Exchange's LocalizedException carries its LocalizedString; whether its key is serialised is not
    known (exchange-facts §9.5), so every text is kept for matching, bounded."""
    texts: list[str] = []
    for value in (getattr(record, "details_message", None), getattr(record, "action", None)):
        if isinstance(value, str) and value:
            texts.append(value)
    _strings(exception, texts, depth=3)
    return tuple(dict.fromkeys(texts))[:_MAX_DETAILS]


def _strings(value: Any, into: list[str], *, depth: int) -> None:
    if len(into) >= _MAX_DETAILS or depth < 0:
        return
    if isinstance(value, str):
        if value:
            into.append(value)
    elif isinstance(value, GenericComplexObject):
        if value.to_string:
            into.append(str(value.to_string))
        for properties in (value.adapted_properties, value.extended_properties):
            for item in properties.values():
                _strings(item, into, depth=depth - 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _strings(item, into, depth=depth - 1)
    elif isinstance(value, Mapping):
        for item in value.values():
            _strings(item, into, depth=depth - 1)


def _message_of(exception: Any) -> str:
    if isinstance(exception, GenericComplexObject):
        for properties in (exception.adapted_properties, exception.extended_properties):
            if properties.get("Message"):
                return str(properties["Message"])
        if exception.to_string:
            return str(exception.to_string)
    return ""


def record_error(cmdlet: str, record: Any) -> errors.ExchangeError:
    """The ExchangeError for one error record: matched on exception type and FailureCategory, not on text."""
    exception = getattr(record, "exception", None)
    names = _type_names(exception)
    full_type = names[0] if names else (getattr(record, "reason", None) or "UnknownException")
    short_type = full_type.rpartition(".")[2]
    message = _message_of(exception) or str(getattr(record, "message", None) or "") or short_type
    fq_error = str(getattr(record, "fq_error", None) or "")
    match = _FAILURE_CATEGORY.search(fq_error)
    category = match.group(1) if match else ""
    category_type = category.removeprefix("Cmdlet-")
    if short_type in THROTTLING_TYPES or category_type in THROTTLING_TYPES:
        hint = _RETRY_AFTER.search(str(getattr(record, "action", None) or ""))
        return errors.ThrottledError(f"{cmdlet}: {message}", delay=float(hint.group(1)) if hint else None)
    if short_type in SESSION_TYPES:
        return errors.UnavailableError(f"{cmdlet}: the gateway session broke: {message}")
    if short_type in TRANSIENT_TYPES or category_type in TRANSIENT_TYPES:
        return errors.TransientError(f"{cmdlet}: {short_type}: {message}")
    return errors.CmdletError(
        cmdlet, short_type, message, category=category, error_id=fq_error, details=_details(record, exception)
    )
