"""The on-premises inventory: mailboxes as `Get-Mailbox | Get-MailboxStatistics` exports them and the grants
`Get-MailboxPermission` / `Get-RecipientPermission` export, read into plain data. A malformed row is a
problem at its file and line (all of them are collected, then raised once); a manager or grantee who is
not in the inventory (a leaver) is a warning."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from controller import errors
from controller.desired import models
from controller.desired.problems import Problems
from controller.desired.shown import shown
from controller.readiness import tables

GB = 1024**3


class Kind(StrEnum):
    """RecipientTypeDetails of the mailboxes Exchange 2003/2007 holds."""

    USER = "UserMailbox"
    SHARED = "SharedMailbox"
    ROOM = "RoomMailbox"
    EQUIPMENT = "EquipmentMailbox"
    LINKED = "LinkedMailbox"  # a user's mailbox in a resource forest
    LEGACY = "LegacyMailbox"  # a mailbox moved from Exchange 2003 and not yet converted


class Right(StrEnum):
    FULL_ACCESS = "FullAccess"
    SEND_AS = "SendAs"
    DELEGATE = "Delegate"


_KINDS = {kind.value.lower(): kind for kind in Kind}
_RIGHTS = {right.value.lower(): right for right in Right} | {"send-as": Right.SEND_AS}
# Principals every mailbox lists in Get-MailboxPermission that are no person: never a reason to group.
_SYSTEM_USER = re.compile(r"^(NT AUTHORITY\\|S-1-5-|NT-AUTORIT|AUTORITE NT\\)", re.IGNORECASE)

MAILBOX_COLUMNS = (
    "PrimarySmtpAddress",
    "DisplayName",
    "Department",
    "Office",
    "Manager",
    "RecipientTypeDetails",
    "TotalItemSize",
    "ItemCount",
)
PERMISSION_COLUMNS = ("Identity", "User", "AccessRights", "Deny")


@dataclass(frozen=True, slots=True)
class Mailbox:
    key: str  # the lower-cased address: identity (one string object shared by every grant naming it)
    address: str
    display_name: str
    department: str
    office: str
    manager: str  # the manager's lower-cased address when in the inventory, "" otherwise
    kind: Kind
    size: int  # bytes
    items: int
    line: int


@dataclass(frozen=True, slots=True)
class Grant:
    """One row of a permissions export: `user` holds `rights` on the mailbox `identity` (lower-cased
    addresses of mailboxes in the inventory)."""

    identity: str
    user: str
    rights: tuple[Right, ...]
    line: int


@dataclass(frozen=True, slots=True)
class Inventory:
    mailboxes: tuple[Mailbox, ...]  # in the order of their lower-cased addresses
    grants: tuple[Grant, ...]
    warnings: tuple[str, ...]  # file:line:column: message
    path: str
    permissions_path: str | None = None

    def index(self) -> dict[str, int]:
        return {mailbox.key: position for position, mailbox in enumerate(self.mailboxes)}


# --- sizes ---------------------------------------------------------------------------------------

_IN_BYTES = re.compile(r"\(\s*([\d.,'\s\u00a0\u202f]+?)\s*bytes\s*\)", re.IGNORECASE)
_WITH_UNIT = re.compile(r"^([\d.,]+)\s*(B|KB|MB|GB|TB)$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": GB, "tb": 1024**4}
_SEPARATORS = str.maketrans("", "", ",.' \u00a0\u202f")


def parse_size(text: str) -> int | None:
    """Bytes from `1288490188`, Exchange 2010's `1.2 GB (1,288,490,188 bytes)` (any digit grouping) or
    Exchange 2007's `1258291KB`; "" is 0 (a mailbox never logged on to has no statistics); else None."""
    text = text.strip()
    if not text:
        return 0
    exact = _IN_BYTES.search(text)
    if exact is not None:
        digits = exact.group(1).translate(_SEPARATORS)
        return int(digits) if digits.isdigit() else None
    plain = text.translate(_SEPARATORS)
    if plain.isdigit() and "." not in text:
        return int(plain)
    unit = _WITH_UNIT.match(text)
    if unit is None:
        return None
    number = unit.group(1).replace(",", "")
    try:
        return int(float(number) * _UNITS[unit.group(2).lower()])
    except ValueError:
        return None


def counted(count: int, noun: str) -> str:
    """`1 member`, `2,000 members`: a count with its noun."""
    return (
        f"{count:,} {noun}"
        if count == 1
        else f"{count:,} {noun}{'es' if noun.endswith(('ch', 'x', 's')) else 's'}"
    )


def gigabytes(size: int) -> str:
    return f"{size / GB:,.1f} GB"


# --- reading ---------------------------------------------------------------------------------------


def read(mailboxes: tuple[str, bytes], permissions: tuple[str, bytes] | None = None) -> Inventory:
    """The inventory from (path, bytes) of the mailbox export and of the permissions export; raises
    `errors.InvalidInput` with every malformed row as `file:line:column: message`."""
    problems = Problems("")
    warnings = Problems("")
    found = _read_mailboxes(*mailboxes, problems, warnings)
    grants: list[Grant] = []
    if permissions is not None:
        grants = _read_grants(*permissions, found, problems, warnings)
    if problems:
        messages = problems.messages()
        noun = "problem" if len(messages) == 1 else "problems"
        raise errors.InvalidInput(f"{len(messages)} {noun} in the inventory", messages)
    ordered = tuple(sorted(found.values(), key=lambda mailbox: mailbox.key))
    return Inventory(
        mailboxes=ordered,
        grants=tuple(grants),
        warnings=tuple(warnings.messages()),
        path=mailboxes[0],
        permissions_path=None if permissions is None else permissions[0],
    )


def _read_mailboxes(path: str, data: bytes, problems: Problems, warnings: Problems) -> dict[str, Mailbox]:
    try:
        text = tables.lines(path, data, problems)
        header, body = tables.rows(path, text, MAILBOX_COLUMNS, ("PrimarySmtpAddress",), problems)
    except tables.Unreadable:
        return {}
    absent = [name for name in header.missing() if name in _ABSENT_MEANS]
    if absent:
        warnings.at(
            models.Source(path, header.line, 1),
            f"warning: no {', '.join(absent)} column: " + "; ".join(_ABSENT_MEANS[name] for name in absent),
        )
    found: dict[str, Mailbox] = {}
    for line, row in body:
        mailbox = _mailbox(path, line, [row[at] if at >= 0 else "" for at in header.index.values()], problems)
        if mailbox is None:
            continue
        first = found.setdefault(mailbox.key, mailbox)
        if first is not mailbox:
            problems.at(
                models.Source(path, line, 1),
                f"{mailbox.address} is listed twice (also on line {first.line})",
            )
    for key, mailbox in found.items():
        if mailbox.manager:
            found[key] = _with_manager(mailbox, _manager(path, mailbox, found, problems, warnings))
    return found


def _manager(
    path: str, mailbox: Mailbox, found: dict[str, Mailbox], problems: Problems, warnings: Problems
) -> str:
    """The manager's key when in the inventory; a leaver is a warning, a value not an address a problem."""
    manager = found.get(mailbox.manager.lower())
    if manager is not None:
        return "" if manager is mailbox else manager.key
    at = models.Source(path, mailbox.line, 1)
    try:
        address = models.smtp_address(mailbox.manager)
    except ValueError as error:
        problems.at(at, f"Manager of {mailbox.address}: {error} (the manager's address, or empty)")
        return ""
    warnings.at(
        at,
        f"warning: manager {address} of {mailbox.address} is not in the inventory (a leaver?): "
        "the mailbox is grouped without its manager",
    )
    return ""


_ABSENT_MEANS = {
    "Department": "batches cannot follow departments",
    "Office": "batches cannot follow offices",
    "Manager": "managers cannot be kept with their direct reports",
    "RecipientTypeDetails": "every mailbox is taken as a UserMailbox",
    "TotalItemSize": "sizes are unknown, so the size budget and the largest-last order do not apply",
}


def _with_manager(mailbox: Mailbox, manager: str) -> Mailbox:
    return Mailbox(
        mailbox.key,
        mailbox.address,
        mailbox.display_name,
        mailbox.department,
        mailbox.office,
        manager,
        mailbox.kind,
        mailbox.size,
        mailbox.items,
        mailbox.line,
    )


def _mailbox(path: str, line: int, cells: list[str], problems: Problems) -> Mailbox | None:
    """One row; `cells` in the order of MAILBOX_COLUMNS ("" where the export has no such column)."""
    written, display_name, department, office, manager, kind_text, size_text, items_text = (
        cell.strip() for cell in cells
    )
    at = models.Source(path, line, 1)
    try:
        address = models.smtp_address(written)
    except ValueError as error:
        problems.at(at, f"PrimarySmtpAddress: {error}")
        return None
    kind = _KINDS.get(kind_text.lower()) if kind_text else Kind.USER
    if kind is None:
        problems.at(
            at,
            f"RecipientTypeDetails {shown(kind_text)} of {address} is not a mailbox type "
            f"({', '.join(k.value for k in Kind)})",
        )
        return None
    size = parse_size(size_text)
    if size is None:
        problems.at(
            at,
            f"TotalItemSize {shown(size_text)} of {address} is not a size "
            "(bytes, or as Exchange shows it: 1.2 GB (1,288,490,188 bytes))",
        )
        return None
    items = items_text.translate(_SEPARATORS)
    if items and not items.isdigit():
        problems.at(at, f"ItemCount {shown(items_text)} of {address} is not a number")
        return None
    return Mailbox(
        key=address.lower(),
        address=address,
        display_name=display_name,
        department=" ".join(department.split()),
        office=" ".join(office.split()),
        manager=manager,  # as written until every row is read; then the manager's key or ""
        kind=kind,
        size=size,
        items=int(items or 0),
        line=line,
    )


def _read_grants(
    path: str, data: bytes, mailboxes: dict[str, Mailbox], problems: Problems, warnings: Problems
) -> list[Grant]:
    try:
        text = tables.lines(path, data, problems)
        header, body = tables.rows(
            path, text, PERMISSION_COLUMNS, ("Identity", "User", "AccessRights"), problems
        )
    except tables.Unreadable:
        return []
    # Get-MailboxPermission names a mailbox by its identity (often the display name); a unique display
    # name is matched too.
    by_name: dict[str, str | None] = {}
    for mailbox in mailboxes.values():
        name = mailbox.display_name.lower()
        if name:
            by_name[name] = None if name in by_name else mailbox.key
    grants: list[Grant] = []
    known: dict[str, tuple[Right, ...]] = {}  # AccessRights as written -> the rights kept (a few values)
    identity_at, user_at, rights_at, deny_at = header.index.values()
    get = mailboxes.get
    for line, row in body:
        identity, user, rights_text = row[identity_at].strip(), row[user_at].strip(), row[rights_at].strip()
        if not identity or not user or not rights_text:
            empty = [
                n for n, v in (("Identity", identity), ("User", user), ("AccessRights", rights_text)) if not v
            ]
            problems.at(models.Source(path, line, 1), f"empty {' and '.join(empty)}: each row is one grant")
            continue
        rights = known.get(rights_text)
        if rights is None:
            rights = known[rights_text] = tuple(
                sorted({_RIGHTS[r] for r in _split_rights(rights_text) if r in _RIGHTS})
            )
        if not rights or (deny_at >= 0 and row[deny_at].strip().lower() == "true"):
            continue  # ReadPermission, ChangeOwner, ...: nothing a migration must keep together; a deny entry
        found = get(identity.lower())
        owner = found.key if found is not None else by_name.get(identity.lower())
        found = get(user.lower())
        holder = found.key if found is not None else by_name.get(user.lower())
        if owner is None or holder is None:
            if holder is None and _SYSTEM_USER.match(user):
                continue  # SELF and well-known SIDs are no person
            who = f"mailbox {shown(identity)}" if owner is None else f"grantee {shown(user)}"
            warnings.at(
                models.Source(path, line, 1),
                f"warning: {who} is not in the inventory (a leaver?): the grant is not kept",
            )
            continue
        if owner is not holder:
            grants.append(Grant(owner, holder, rights, line))
    return grants


def _split_rights(text: str) -> list[str]:
    return [part.strip().lower() for part in re.split(r"[,;{}\s]+", text) if part.strip()]
