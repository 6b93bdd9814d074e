"""The graph of who must move with whom, and how a permission group too big for one batch is cut. Pure.

Nodes are mailboxes (indices into the inventory's sorted list). A grant joins its mailbox and its holder
(weight: the grants between the two); a manager link joins a report and their manager. Permission
groups are the connected components of the grant graph. A group larger than a batch is cut in three
steps, greedy by department, then by grants, then improved:

- by department: the group is sliced by department (a member without one, as shared mailboxes often are,
  joins the department most of its grants go to); a slice that fits a batch is one part. Departments are
  what the runbook groups by, and grants across departments are the few in an organisation.
- by grants (greedy graph growing, as METIS starts its partitions): a slice still too big grows parts one
  at a time from its first unplaced member in org-chart order, each time taking the unplaced member of the
  slice with the most grants into the part (ties: the most manager links into it, then org-chart order),
  until the part holds a batch's members or its size budget.
- improving (Fiduccia-Mattheyses style, single moves only): a member with more grants into another part
  than into its own moves there when that part has room; every move lowers the crossing grants, so the
  passes end, and at most `REFINE_PASSES` are made. A shared mailbox with 3,000 grantees across
  departments ends as the mailbox with 1,999 of them, the other 1,001 in other parts: the fewest crossings
  any cut of it can have.

All steps are linear in the edges (heap operations aside) and deterministic: every tie falls to a fixed
order.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

REFINE_PASSES = 4


@dataclass(frozen=True, slots=True)
class Capacity:
    members: int
    size: int  # bytes


class Graph:
    """Adjacency of grants (neighbour -> grants between the two) and of manager links."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.grants: list[dict[int, int]] = [{} for _ in range(count)]
        self.manager: list[int] = [-1] * count
        self.reports: list[list[int]] = [[] for _ in range(count)]

    def add_grant(self, left: int, right: int) -> None:
        if left == right:
            return
        self.grants[left][right] = self.grants[left].get(right, 0) + 1
        self.grants[right][left] = self.grants[right].get(left, 0) + 1

    def set_manager(self, report: int, manager: int) -> None:
        self.manager[report] = manager
        self.reports[manager].append(report)

    def components(self) -> list[list[int]]:
        """The permission groups: connected components of the grant graph, each in node order, the
        groups in the order of their first node."""
        parent = list(range(self.count))

        def root(node: int) -> int:
            while parent[node] != node:
                parent[node] = parent[parent[node]]
                node = parent[node]
            return node

        for node, neighbours in enumerate(self.grants):
            for other in neighbours:
                if other > node:
                    a, b = root(node), root(other)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
        groups: dict[int, list[int]] = {}
        for node in range(self.count):
            groups.setdefault(root(node), []).append(node)
        return list(groups.values())

    def org_order(self) -> list[int]:
        """Each node's position in a depth-first walk of the org chart: a manager, then the direct reports
        without reports of their own, then each report who manages with their own subtree, so that a
        manager sits next to their direct reports and a whole sub-organisation is contiguous. A node in
        a manager cycle (bad data) starts its own walk."""
        position = [-1] * self.count
        counter = 0
        children = [
            sorted(reports, key=lambda node: (len(self.reports[node]), node)) for reports in self.reports
        ]
        roots = [node for node in range(self.count) if self.manager[node] < 0]
        for start in [*roots, *range(self.count)]:
            if position[start] >= 0:
                continue
            stack = [start]
            while stack:
                node = stack.pop()
                if position[node] >= 0:
                    continue
                position[node] = counter
                counter += 1
                stack.extend(reversed([child for child in children[node] if position[child] < 0]))
        return position


def cut(
    graph: Graph,
    group: Sequence[int],
    *,
    sizes: Sequence[int],
    departments: Sequence[int],
    org: Sequence[int],
    capacity: Capacity,
) -> list[list[int]]:
    """`group` (a permission group over capacity) cut into parts that each fit a batch, few grants crossing.

    `departments` orders the slices (-1: none; such a member joins the slice most of its grants go to)."""
    slices: dict[int, list[int]] = {}
    for node in _attached(graph, group, departments):
        slices.setdefault(node[1], []).append(node[0])
    part_of: dict[int, int] = {}
    parts: list[list[int]] = []
    for department in sorted(slices):
        members = sorted(slices[department], key=org.__getitem__)
        if len(members) <= capacity.members and sum(sizes[node] for node in members) <= capacity.size:
            part_of.update(dict.fromkeys(members, len(parts)))
            parts.append(members)
            continue
        inside = set(members)
        cursor = 0
        while cursor < len(members):
            parts.append(_grow(graph, members, cursor, inside, part_of, len(parts), sizes, org, capacity))
            while cursor < len(members) and members[cursor] in part_of:
                cursor += 1
    order = sorted(group, key=lambda node: (part_of[node], org[node]))
    _refine(graph, order, parts, part_of, sizes, capacity)
    return [sorted(part, key=org.__getitem__) for part in parts if part]


def _attached(graph: Graph, group: Sequence[int], departments: Sequence[int]) -> list[tuple[int, int]]:
    """(node, slice) for each node: its department, or for a node without one (a shared mailbox often
    has none) the department most of its grants go to (ties: the first in order)."""
    attached = []
    for node in group:
        department = departments[node]
        if department < 0:
            weights: dict[int, int] = {}
            for other, weight in graph.grants[node].items():
                if departments[other] >= 0:
                    weights[departments[other]] = weights.get(departments[other], 0) + weight
            department = min(weights, key=lambda d: (-weights[d], d)) if weights else -1
        attached.append((node, department))
    return attached


def _grow(
    graph: Graph,
    sweep: Sequence[int],
    cursor: int,
    inside: set[int],
    part_of: dict[int, int],
    part: int,
    sizes: Sequence[int],
    org: Sequence[int],
    capacity: Capacity,
) -> list[int]:
    """One part of a department's slice grown from the first unplaced node of `sweep` (module docstring)."""
    members: list[int] = []
    size = 0
    gain: dict[int, int] = {}  # grants into the part
    links: dict[int, int] = {}  # manager links into the part
    frontier: list[tuple[int, int, int, int]] = []

    def push(node: int) -> None:
        heapq.heappush(frontier, (-gain.get(node, 0), -links.get(node, 0), org[node], node))

    def take(node: int) -> None:
        nonlocal size
        part_of[node] = part
        members.append(node)
        size += sizes[node]
        for other, weight in graph.grants[node].items():
            if other in inside and other not in part_of:
                gain[other] = gain.get(other, 0) + weight
                push(other)
        related = graph.reports[node] + ([graph.manager[node]] if graph.manager[node] >= 0 else [])
        for other in related:
            if other in inside and other not in part_of:
                links[other] = links.get(other, 0) + 1
                push(other)

    while len(members) < capacity.members:
        node = -1
        while frontier:
            grants, linked, _, candidate = heapq.heappop(frontier)
            if (
                candidate in part_of
                or -grants != gain.get(candidate, 0)
                or -linked != links.get(candidate, 0)
            ):
                continue  # placed already, or an older entry of a node whose gain grew since
            if members and size + sizes[candidate] > capacity.size:
                continue  # too big for what is left of this part: a later part takes it
            node = candidate
            break
        if node < 0:
            while cursor < len(sweep) and sweep[cursor] in part_of:
                cursor += 1
            if cursor == len(sweep):
                break
            node = sweep[cursor]
            if members and size + sizes[node] > capacity.size:
                break  # the part is full by size
        take(node)
    return members


def _refine(
    graph: Graph,
    order: Sequence[int],
    parts: list[list[int]],
    part_of: dict[int, int],
    sizes: Sequence[int],
    capacity: Capacity,
) -> None:
    """Single moves that each lower the grants crossing between parts, while the target part has room. The
    first pass visits every node, each later one only the neighbours of the nodes the pass before moved."""
    counts = [len(part) for part in parts]
    totals = [sum(sizes[node] for node in part) for part in parts]
    visit: Sequence[int] = order
    rank = {node: position for position, node in enumerate(order)}
    for _ in range(REFINE_PASSES):
        moved: set[int] = set()
        for node in visit:
            own = part_of[node]
            weights: dict[int, int] = {}
            for other, weight in graph.grants[node].items():
                where = part_of.get(other)
                if where is not None:
                    weights[where] = weights.get(where, 0) + weight
            if not weights or (len(weights) == 1 and own in weights):
                continue
            best = min(weights, key=lambda where: (-weights[where], where))
            if best == own or weights[best] <= weights.get(own, 0):
                continue
            if counts[best] >= capacity.members or totals[best] + sizes[node] > capacity.size:
                continue
            part_of[node] = best
            counts[own] -= 1
            counts[best] += 1
            totals[own] -= sizes[node]
            totals[best] += sizes[node]
            moved.add(node)
        if not moved:
            break
        visit = sorted(
            {other for node in moved for other in graph.grants[node] if other in rank}, key=rank.__getitem__
        )
    for part in parts:
        part.clear()
    for node in order:
        parts[part_of[node]].append(node)
