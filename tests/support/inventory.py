"""A generated on-premises inventory as an administrator exports it: departments with an org chart, shared
mailboxes with grantees mostly of their department, managers with delegates, a few very large mailboxes.
Deterministic for a seed; used by tests/test_init.py, tests/test_lint.py and bench/readiness.py."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from controller.readiness.inventory import MAILBOX_COLUMNS

DOMAIN = "contoso.com"
DEPARTMENTS = (
    ("IT", 3),
    ("Sales", 22),
    ("Finance", 10),
    ("Marketing", 8),
    ("Legal", 3),
    ("Human Resources", 4),
    ("Operations", 20),
    ("Engineering", 18),
    ("Support", 12),
)
OFFICES = ("Paris", "London", "Berlin", "Madrid", "Oslo")
# The columns of the export, and one more an export carries that is ignored.
MAILBOX_HEADER = (*MAILBOX_COLUMNS, "ServerName")
PERMISSION_HEADER = ("Identity", "User", "AccessRights", "IsInherited", "Deny")
BRANCHING = 7
CROSSING = 0.02  # grants to someone anywhere in the organisation


@dataclass
class Generated:
    mailboxes: Path
    permissions: Path
    count: int
    grants: int


def exchange_size(size: int) -> str:
    """TotalItemSize as Exchange 2010's shell shows it: `1.2 GB (1,288,490,188 bytes)`."""
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit} ({size:,} bytes)"
    return f"{size} B ({size:,} bytes)"


def generate(directory: Path, *, mailboxes: int, grants: int, seed: int = 16) -> Generated:
    rng = random.Random(seed)
    weights = [weight for _, weight in DEPARTMENTS]
    rows: list[list[str]] = []
    by_department: dict[str, list[int]] = {name: [] for name, _ in DEPARTMENTS}
    shared: list[int] = []
    users: list[int] = []
    ceo = 0
    for number in range(mailboxes):
        department = rng.choices([name for name, _ in DEPARTMENTS], weights)[0] if number else "Management"
        kind = "SharedMailbox" if number and rng.random() < 0.05 else "UserMailbox"
        if number and kind == "UserMailbox" and rng.random() < 0.01:
            kind = rng.choice(("RoomMailbox", "EquipmentMailbox"))
        size = int(rng.lognormvariate(19.5, 1.3))  # median about 0.3 GB, a long tail past 10 GB
        address = f"user{number:06d}@{DOMAIN}"
        rows.append(
            [
                address,
                f"User {number}",
                "" if kind == "SharedMailbox" and rng.random() < 0.5 else department,
                rng.choice(OFFICES),
                "",
                kind,
                exchange_size(size) if number % 2 else str(size),
                str(rng.randint(10, 200_000)),
                f"EX{number % 4:02d}",
            ]
        )
        if number and kind == "UserMailbox":
            users.append(number)
            by_department[department].append(number)
        elif kind != "UserMailbox":
            shared.append(number)
    # The org chart: each department's head reports to the CEO, everyone else to a manager of about seven.
    teams: dict[int, list[int]] = {}
    for members in by_department.values():
        for position, number in enumerate(members):
            manager = ceo if position == 0 else members[(position - 1) // BRANCHING]
            rows[number][4] = rows[manager][0]
            teams.setdefault(manager, []).append(number)
    managers = [manager for manager in teams if manager != ceo]
    team_of_shared = {number: rng.choice(managers) for number in shared} if managers else {}
    permission_rows: list[list[str]] = []
    while len(permission_rows) < grants and managers:
        roll = rng.random()
        if roll < 0.6 and shared:
            target = rng.choice(shared)  # a shared mailbox and its team
            manager = team_of_shared[target]
        elif roll < 0.8:
            manager = rng.choice(managers)  # a manager and a delegate among their reports
            target = manager
        else:
            manager = rng.choice(managers)  # a colleague's mailbox in the same team
            target = rng.choice(teams[manager])
        pool = [manager, *teams[manager]]
        holder = rng.choice(users if rng.random() < CROSSING else pool)
        if holder == target:
            continue
        right = "Delegate" if target == manager and roll >= 0.6 else rng.choice(("FullAccess", "SendAs"))
        permission_rows.append([rows[target][0], rows[holder][0], right, "False", "False"])
    directory.mkdir(parents=True, exist_ok=True)
    inventory_path = directory / "inventory.csv"
    permissions_path = directory / "permissions.csv"
    with inventory_path.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.writer(handle)
        writer.writerow(MAILBOX_HEADER)
        writer.writerows(rows)
    with permissions_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(PERMISSION_HEADER)
        writer.writerows(permission_rows)
    return Generated(inventory_path, permissions_path, mailboxes, len(permission_rows))
