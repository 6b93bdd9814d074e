"""Batches planned from an inventory as the runbook has them, each with why it holds whom. Pure.

1. Permission groups (`graph.Graph.components`: a shared mailbox with everyone who holds rights on it, a
   manager with their delegates) stay whole; a group over a batch's capacity (2,000 members or the size
   budget) is cut where few grants cross (`graph.cut`), and every grant that still crosses is listed.
2. Mailboxes of at least `large_mailbox_gb` with no grant go to the last batches, smallest first: they take
   longest to copy, and nobody's access waits on them.
3. The IT pilot first: the groups whose members are mostly in a department matching `pilot` (`IT`,
   `Information Technology`).
4. Then one department (or office) after another, the smallest in size first; inside a department the
   groups in org-chart order (`graph.Graph.org_order`), so a manager sits with their direct reports. A
   department starts a new batch unless it fits whole in the room left in the current one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from controller.desired import models
from controller.desired.shown import printable
from controller.readiness import graph as graphs
from controller.readiness.inventory import GB, Grant, Inventory, Kind, Mailbox, counted, gigabytes

DEFAULT_MAX_BATCH_GB = 500.0  # a choice, not a Microsoft limit: set it from the throughput the pilot shows
DEFAULT_LARGE_MAILBOX_GB = 10.0
PILOT_DEPARTMENT = r"\bIT\b|(?i:information technology)"
NO_GROUP = "(none)"
RESOURCES = (Kind.SHARED, Kind.ROOM, Kind.EQUIPMENT)
LABEL_WIDTH = 40


class Reason(StrEnum):
    PILOT = "pilot"
    GROUP = "group"
    LARGE = "large"


@dataclass(frozen=True, slots=True)
class Options:
    max_members: int = models.MAX_BATCH_MEMBERS
    max_batch_gb: float = DEFAULT_MAX_BATCH_GB
    large_mailbox_gb: float = DEFAULT_LARGE_MAILBOX_GB
    group_by: str = "department"  # or "office"
    pilot: str = PILOT_DEPARTMENT  # a regular expression matched against each department


@dataclass(slots=True)
class Atom:
    """Mailboxes that go into one batch together: a permission group or a part of one."""

    members: list[int]
    size: int
    home: int  # the group id (department or office) most of its members belong to
    position: int  # the org-chart position of its first member
    pilot: bool = False
    split: int = -1  # the number of the permission group it is a part of, when that group was cut


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    name: str
    reason: Reason
    members: tuple[int, ...]  # indices into the inventory's mailboxes
    size: int
    why: tuple[str, ...]  # sentences, user data escaped


@dataclass(frozen=True, slots=True)
class Crossing:
    grant: Grant
    identity_batch: str
    user_batch: str


@dataclass(frozen=True, slots=True)
class BatchPlan:
    batches: tuple[PlannedBatch, ...]
    crossings: tuple[Crossing, ...]
    managers_apart: int  # direct reports in another batch than their manager
    notes: tuple[str, ...]
    options: Options = field(default_factory=Options)


def label(text: str, width: int = LABEL_WIDTH) -> str:
    """User data as the output shows it: control characters escaped, at most `width` characters."""
    shown = printable(text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def plan(inventory: Inventory, options: Options) -> BatchPlan:
    boxes = inventory.mailboxes
    index = inventory.index()
    graph = graphs.Graph(len(boxes))
    for grant in inventory.grants:
        graph.add_grant(index[grant.identity], index[grant.user])
    for node, mailbox in enumerate(boxes):
        if mailbox.manager:
            graph.set_manager(node, index[mailbox.manager])
    org = graph.org_order()
    groups, labels = _group_ids(inventory, options.group_by)
    sizes = [mailbox.size for mailbox in boxes]
    capacity = graphs.Capacity(options.max_members, int(options.max_batch_gb * GB))
    large = int(options.large_mailbox_gb * GB)
    pilot = re.compile(options.pilot)
    # A cut group is swept pilot departments first, so that IT's share of it forms parts of its own.
    pilots = {group for group, text in enumerate(labels) if pilot.search(text)}
    # A shared, room or equipment mailbox is cut with the department its grants go to, not its own.
    sweep = [
        -1
        if mailbox.kind in RESOURCES or not _attribute(mailbox, options.group_by)
        else group
        if group in pilots
        else group + len(labels)
        for mailbox, group in zip(boxes, groups, strict=True)
    ]
    atoms: list[Atom] = []
    solitary: list[int] = []
    cut_groups: list[int] = []  # the size of each permission group that was cut
    for component in graph.components():
        if len(component) == 1 and sizes[component[0]] >= large:
            solitary.append(component[0])
            continue
        total = sum(sizes[node] for node in component)
        if len(component) <= capacity.members and total <= capacity.size:
            atoms.append(_atom(sorted(component, key=org.__getitem__), inventory, groups, org, pilot))
            continue
        for part in graphs.cut(graph, component, sizes=sizes, departments=sweep, org=org, capacity=capacity):
            atoms.append(_atom(part, inventory, groups, org, pilot, split=len(cut_groups)))
        cut_groups.append(len(component))
    packed = _pack(atoms, solitary, sizes, labels, capacity)
    return _describe(inventory, packed, graph, labels, cut_groups, options)


def _attribute(mailbox: Mailbox, group_by: str) -> str:
    return mailbox.office if group_by == "office" else mailbox.department


def _group_ids(inventory: Inventory, group_by: str) -> tuple[list[int], list[str]]:
    """Each mailbox's group id (ids in the order of the groups' names) and each id's label; a mailbox
    without the chosen attribute takes the other one, else the `(none)` group."""

    def key(department: str, office: str) -> str:
        first, second = (office, department) if group_by == "office" else (department, office)
        return first or second or NO_GROUP

    written = [key(mailbox.department, mailbox.office) for mailbox in inventory.mailboxes]
    spelling: dict[str, str] = {}
    for text in written:
        spelling.setdefault(text.casefold(), text)
    ordered = sorted(spelling)
    ids = {folded: number for number, folded in enumerate(ordered)}
    return [ids[text.casefold()] for text in written], [spelling[folded] for folded in ordered]


def _atom(
    members: list[int],
    inventory: Inventory,
    groups: Sequence[int],
    org: Sequence[int],
    pilot: re.Pattern[str],
    *,
    split: int = -1,
) -> Atom:
    boxes = inventory.mailboxes
    departments = [boxes[node].department for node in members if boxes[node].department]
    in_pilot = sum(1 for department in departments if pilot.search(department))
    homes = Counter(groups[node] for node in members if boxes[node].kind is not Kind.SHARED) or Counter(
        groups[node] for node in members
    )
    home = min(homes, key=lambda group: (-homes[group], group))
    return Atom(
        members=members,
        size=sum(boxes[node].size for node in members),
        home=home,
        position=min(org[node] for node in members),
        pilot=in_pilot * 2 > len(departments),
        split=split,
    )


@dataclass(slots=True)
class _Packed:
    reason: Reason
    atoms: list[Atom] = field(default_factory=list)
    count: int = 0
    size: int = 0

    def fits(self, count: int, size: int, capacity: graphs.Capacity) -> bool:
        return self.count + count <= capacity.members and self.size + size <= capacity.size

    def add(self, atom: Atom) -> None:
        self.atoms.append(atom)
        self.count += len(atom.members)
        self.size += atom.size


def _pack(
    atoms: list[Atom],
    solitary: list[int],
    sizes: Sequence[int],
    labels: Sequence[str],
    capacity: graphs.Capacity,
) -> list[_Packed]:
    """The atoms into batches: the pilot's, then each department's (smallest first), then the largest
    mailboxes'. Inside each, first fit in org-chart order: an atom goes into the first of that run's
    batches with room, so a cut group's full parts and the small groups beside them share batches."""
    packed: list[_Packed] = []

    def run(reason: Reason, members: list[Atom], into: list[_Packed]) -> None:
        for atom in members:
            target = next((b for b in into if b.fits(len(atom.members), atom.size, capacity)), None)
            if target is None:
                target = _Packed(reason)
                into.append(target)
                packed.append(target)
            target.add(atom)

    run(Reason.PILOT, sorted((atom for atom in atoms if atom.pilot), key=lambda atom: atom.position), [])
    by_home: dict[int, list[Atom]] = {}
    for atom in atoms:
        if not atom.pilot:
            by_home.setdefault(atom.home, []).append(atom)
    order = sorted(by_home, key=lambda home: (sum(atom.size for atom in by_home[home]), labels[home]))
    for home in order:
        members = by_home[home]
        count, size = sum(len(atom.members) for atom in members), sum(atom.size for atom in members)
        last = packed[-1] if packed else None
        # A department that fits whole in the room the previous one left joins it; else it starts afresh.
        shared = [last] if last and last.reason is Reason.GROUP and last.fits(count, size, capacity) else []
        run(Reason.GROUP, sorted(members, key=lambda atom: atom.position), shared)
    large = [
        Atom([node], sizes[node], -1, node) for node in sorted(solitary, key=lambda node: (sizes[node], node))
    ]
    run(Reason.LARGE, large, [])
    return packed


def _describe(
    inventory: Inventory,
    packed: list[_Packed],
    graph: graphs.Graph,
    labels: Sequence[str],
    cut_groups: Sequence[int],
    options: Options,
) -> BatchPlan:
    boxes = inventory.mailboxes
    width = max(2, len(str(len(packed))))
    names = [_name(number + 1, width, batch, inventory, labels) for number, batch in enumerate(packed)]
    batch_of = [-1] * len(boxes)
    for number, batch in enumerate(packed):
        for atom in batch.atoms:
            for node in atom.members:
                batch_of[node] = number
    index = inventory.index()
    crossings = tuple(
        Crossing(grant, names[batch_of[index[grant.identity]]], names[batch_of[index[grant.user]]])
        for grant in inventory.grants
        if batch_of[index[grant.identity]] != batch_of[index[grant.user]]
    )
    crossing_per_group = Counter(batch_of[index[c.grant.identity]] for c in crossings) + Counter(
        batch_of[index[c.grant.user]] for c in crossings
    )
    apart = [
        node
        for node in range(len(boxes))
        if graph.manager[node] >= 0 and batch_of[graph.manager[node]] != batch_of[node]
    ]
    apart_per_batch = Counter(batch_of[node] for node in apart)
    spans: dict[int, list[int]] = {}
    for number, batch in enumerate(packed):
        for home in {atom.home for atom in batch.atoms if batch.reason is Reason.GROUP}:
            spans.setdefault(home, []).append(number)
    pilots = [number for number, batch in enumerate(packed) if batch.reason is Reason.PILOT]
    batches = []
    for number, batch in enumerate(packed):
        why = _why(number, batch, names, labels, spans, pilots, cut_groups, options)
        crossing = crossing_per_group.get(number, 0)
        if crossing:
            why.append(
                f"{counted(crossing, 'grant')} of its members cross to other batches (listed in "
                "crossing-grants.csv)."
            )
        if apart_per_batch.get(number):
            alone = apart_per_batch[number]
            verb = "has" if alone == 1 else "have"
            why.append(f"{alone:,} of its members {verb} their manager in another batch.")
        largest = max(boxes[node].size for atom in batch.atoms for node in atom.members)
        why.append(
            f"{counted(batch.count, 'member')}, {gigabytes(batch.size)} of the "
            f"{gigabytes(int(options.max_batch_gb * GB))} budget, the largest mailbox {gigabytes(largest)}."
        )
        members = tuple(node for atom in batch.atoms for node in atom.members)
        batches.append(PlannedBatch(names[number], batch.reason, members, batch.size, tuple(why)))
    notes = [
        f"{boxes[node].address} alone is larger ({gigabytes(boxes[node].size)}) than the size budget: it "
        "has a batch of its own"
        for node in range(len(boxes))
        if boxes[node].size > options.max_batch_gb * GB
    ]
    if not pilots:
        notes.append("no department matches the pilot pattern: there is no IT pilot batch")
    return BatchPlan(tuple(batches), crossings, len(apart), tuple(notes), options)


def _name(number: int, width: int, batch: _Packed, inventory: Inventory, labels: Sequence[str]) -> str:
    boxes = inventory.mailboxes
    if batch.reason is Reason.LARGE:
        text = "Large"
    else:
        weight = Counter[str]()
        for atom in batch.atoms:
            for node in atom.members:
                if batch.reason is Reason.PILOT:
                    weight[boxes[node].department] += 1
                else:
                    weight[labels[atom.home]] += 1
        weight.pop("", None)
        top = min(weight, key=lambda text: (-weight[text], text)) if weight else ""
        text = _ascii(top) or "Mixed"
        if batch.reason is Reason.PILOT:
            text = f"Pilot-{text}"
    name = f"Batch{number:0{width}d}-{text}"
    return name[: models.MAX_BATCH_NAME].rstrip("-")


def _ascii(text: str) -> str:
    """Letters, digits and '-' only, as a batch name allows (contract §2)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:LABEL_WIDTH].rstrip("-")


def _why(
    number: int,
    batch: _Packed,
    names: Sequence[str],
    labels: Sequence[str],
    spans: dict[int, list[int]],
    pilots: Sequence[int],
    cut_groups: Sequence[int],
    options: Options,
) -> list[str]:
    why: list[str] = []
    if batch.reason is Reason.PILOT:
        part = f", part {pilots.index(number) + 1} of {len(pilots)}" if len(pilots) > 1 else ""
        why.append(
            f"The IT pilot{part}: IT migrates first and signs off before anyone else moves "
            f"(departments matching {label(options.pilot)})."
        )
    elif batch.reason is Reason.LARGE:
        why.append(
            f"The largest mailboxes ({options.large_mailbox_gb:g} GB or more) with no permission ties, last "
            "and smallest first: they take longest to copy and nobody's access waits on them."
        )
    else:
        homes = Counter[int]()
        for atom in batch.atoms:
            homes[atom.home] += len(atom.members)
        listed = ", ".join(
            f"{label(labels[home])} {count:,}"
            for home, count in sorted(homes.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        noun = options.group_by
        if len(homes) > 1:
            why.append(f"Grouped by {noun}: {listed} (each fits whole in what the previous left).")
        else:
            (home,) = homes
            span = spans[home]
            more = (
                f", part {span.index(number) + 1} of {len(span)} ({names[span[0]]} to {names[span[-1]]})"
                if len(span) > 1
                else ""
            )
            why.append(f"Grouped by {noun}: {label(labels[home])}{more}.")
        why.append("In org-chart order, so that managers stay with their direct reports.")
    whole = [atom for atom in batch.atoms if len(atom.members) > 1 and atom.split < 0]
    if whole:
        groups = "1 permission group" if len(whole) == 1 else f"{len(whole):,} permission groups"
        why.append(
            f"Keeps {groups} whole (shared mailboxes with everyone holding rights on them, delegates with "
            "their principals)."
        )
    for split in sorted({atom.split for atom in batch.atoms if atom.split >= 0}):
        why.append(
            f"Holds a part of a permission group of {cut_groups[split]:,} mailboxes, too many for one batch: "
            "cut where the fewest grants cross."
        )
    return why
