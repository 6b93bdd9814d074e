"""`stagectl plan`: what apply would do, what waits and what a gate blocks; read-only."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from controller import errors
from controller.commands import common, reviewed
from controller.desired import loader
from controller.desired.models import DesiredState
from controller.model.actions import Plan
from controller.model.snapshot import Snapshot, at
from controller.planner import changes, render
from controller.planner.plan import plan
from controller.runtime import publish
from controller.runtime.observe import unknown
from controller.runtime.source import GitSource


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("plan", help="show the actions that would converge Exchange and DNS")
    common.add_desired_arguments(parser)
    common.add_backend_arguments(parser)
    parser.add_argument("--observed", type=Path, help="plan against this snapshot instead of observing")
    parser.add_argument(
        "--base",
        metavar="REV",
        help="with --repo: a pull request's base; the plan also lists the desired-state changes base..head",
    )
    parser.add_argument(
        "--head", metavar="REV", help="with --repo: the revision to plan (a pull request's head; as --rev)"
    )
    parser.add_argument("--format", choices=sorted(render.RENDERERS), default="text")
    parser.add_argument("--force", action="store_true", help="let the change-size gate pass")
    parser.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 2 when there are changes, 3 when part of the state could not be read",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    review = _pull_request(args) if args.base is not None or args.head is not None else None
    desired = review.planned if review is not None else common.load_desired(args)
    if args.observed is not None:
        snapshot = _read_snapshot(args.observed)
        now = args.now or snapshot.observedAt
    else:
        snapshot = common.observe_once(args, desired)
        now = snapshot.observedAt
    result = plan(desired, snapshot, now, force=args.force)
    unread = unknown(snapshot)
    if review is None:
        sys.stdout.write(render.RENDERERS[args.format](result, unread))
    else:
        sys.stdout.write(_render_review(args, review, result, unread, snapshot))
    if args.format == "markdown":  # the reviewed actions, for `apply --checksum --reviewed` (hidden)
        sys.stdout.write("\n" + reviewed.block(result))
    # Kept so that `apply --checksum` can name what changed since this plan was reviewed.
    directory = common.state_dir(args, common.config_of(args))
    try:
        reviewed.record(directory, result)
    except OSError as error:  # the plan was shown; only naming its changes at apply time is lost
        print(f"note: the plan could not be kept in {directory}: {error.strerror}", file=sys.stderr)
    if not args.detailed_exitcode:
        return 0
    return 3 if unread else 2 if result.has_changes else 0


def _read_snapshot(path: Path) -> Snapshot:
    from pydantic import ValidationError

    try:
        return Snapshot.from_json(path.read_bytes())
    except OSError as error:
        raise errors.InvalidInput(f"{path}: cannot read the snapshot: {error.strerror}") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise errors.InvalidInput(f"{path}: snapshot {where}: {first['msg']}") from None


# --- pull-request plans: --base and --head (issue 15 item 1) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Review:
    base: DesiredState  # what the pull request's changes are listed against: the merge base
    head: DesiredState  # the pull request's head, as committed
    planned: DesiredState  # what is planned: the head, or the merge result when the head is behind
    observed_for: DesiredState | None  # the revision the published snapshot was observed for, if known
    target: str  # the base revision the pull request merges into (its tip)
    notice: str = ""  # one sentence when the head does not contain the base
    behind: int = 0  # commits of the base the head does not contain
    merged: bool = False  # `planned` is the merge result (no commit: no apply line)

    def as_data(self) -> dict[str, object]:
        return {
            "target": self.target,
            "mergeBase": self.base.revision,
            "behind": self.behind,
            "planned": "merge result" if self.merged else "head",
            "notice": self.notice or None,
        }


def _pull_request(args: argparse.Namespace) -> Review:
    """Both revisions from one repository. What the pull request changes is the head against the merge
    base (the base as the branch left it: what the base gained since is not the pull request's). The head
    is planned when it contains the base; when it is behind, the merge result git computes without a
    conflict (`git merge-tree`), else the head as it is, and a sentence says which. The revision a
    published snapshot was observed for is loaded too, to name what the snapshot never read."""
    if not args.repo:
        raise errors.InvalidInput("--base and --head read two revisions of a repository: give --repo PATH")
    if args.base is None:
        raise errors.InvalidInput("--head needs --base: the revision the pull request would merge into")
    served = _published(args.observed).get("revision") if args.observed is not None else None
    with tempfile.TemporaryDirectory(prefix="stagectl-") as workdir:
        source = GitSource(args.repo, desired_dir=args.desired_dir, workdir=Path(workdir))
        head_sha = source.resolve(args.head or args.rev)
        head = _load(source, args.repo, args.desired_dir, head_sha)
        target = source.resolve(args.base)
        fork = source.merge_base(target, head_sha) or target
        base = _load_base(source, args, target)
        since = base if fork == target else _load_base(source, args, fork)
        observed_for = base if served in (None, target) else _try_load(source, args, str(served))
        if source.contains(target, head_sha):
            return Review(since, head, head, observed_for, target)
        behind = source.count_missing(target, head_sha)
        merged, why = _merge_result(source, args, target, head_sha)
        notice = _notice(target, head_sha, behind, merged, why)
    if merged is not None:
        return Review(since, head, merged, observed_for, target, notice, behind, merged=True)
    return Review(since, head, head, observed_for, target, notice, behind)


def _load(source: GitSource, repo: str, desired_dir: str, sha: str) -> DesiredState:
    files = source.read_tree(sha)
    return loader.load_files(files, root=f"{repo}@{sha[:12]}/{desired_dir}", revision=sha)


def _load_base(source: GitSource, args: argparse.Namespace, sha: str) -> DesiredState:
    try:
        return _load(source, args.repo, args.desired_dir, sha)
    except errors.InvalidInput as error:
        raise errors.InvalidInput(
            f"the base revision {sha[:12]} is invalid, so no change can be listed against it: "
            + "; ".join(error.problems[:3])
        ) from None


def _merge_result(
    source: GitSource, args: argparse.Namespace, target: str, head: str
) -> tuple[DesiredState | None, str]:
    """The desired state of merging `head` into `target`, or None and why not (one clause)."""
    tree, conflicts = source.merge_tree(target, head)
    if tree is None:
        if conflicts:
            shown = ", ".join(conflicts[:3]) + (
                f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
            )
            return None, f"git cannot merge it without conflicts ({shown})"
        return None, "this git cannot compute the merge (git merge-tree --write-tree needs git 2.38 or later)"
    files = source.read_tree(tree, tree=True)
    root = f"{args.repo}@merge of {head[:12]} into {target[:12]}/{args.desired_dir}"
    try:
        # The tree's id is the revision: the checksum is of this tree, and no commit has it.
        return loader.load_files(files, root=root, revision=tree), ""
    except errors.InvalidInput as error:
        return None, "the merge result would not be valid (" + "; ".join(error.problems[:2]) + ")"


def _notice(target: str, head: str, behind: int, merged: DesiredState | None, why: str) -> str:
    """The sentence at the top of the comment of a head that does not contain the base."""
    commits = f"{behind} commit" + ("" if behind == 1 else "s")
    lead = f"The head {head[:12]} does not contain {commits} of the base {target[:12]}"
    if merged is not None:
        return (
            f"{lead}: the plan below is of merging it as git would (merge tree {merged.revision[:12]}), "
            "which is not a commit yet, so no apply line is given; rebase or merge the base into the branch "
            "for a plan of a commit, or let the controller apply the merge commit."
        )
    return (
        f"{lead} and {why}: the plan shown is for the head as it is, not the merge; rebase or merge the "
        "base into the branch to see the plan of the merge."
    )


def _try_load(source: GitSource, args: argparse.Namespace, revision: str) -> DesiredState | None:
    """The desired state the controller served when it observed: not in this clone (a commit the CI
    checkout lacks) or invalid, it is unknown, and the plan says so."""
    try:
        return _load(source, args.repo, args.desired_dir, source.resolve(revision))
    except (errors.InvalidInput, errors.ExternalFailure):
        return None


def _published(path: Path) -> dict[str, object]:
    """What a controller wrote beside its snapshot (runtime/publish.py); {} for a snapshot from `observe`."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}  # _read_snapshot says why
    found = data.get(publish.PUBLISHED_KEY) if isinstance(data, dict) else None
    return found if isinstance(found, dict) else {}


def _render_review(
    args: argparse.Namespace, review: Review, result: Plan, unread: render.Unknown, snapshot: Snapshot
) -> str:
    found = changes.diff(review.base, review.head)
    context = _context(args, review, snapshot)
    if args.format == "json":
        data = render.plan_data(result, unread) | {
            "desiredChanges": found.as_data(),
            "context": context,
            "pullRequest": review.as_data(),
        }
        return json.dumps(data, indent=2, default=str) + "\n"
    if args.format == "markdown":
        return render.to_pr_markdown(
            result,
            unread,
            found,
            context,
            target=review.target,
            notice=review.notice,
            applicable=not review.merged,
        )
    return render.to_pr_text(result, unread, found, context, notice=review.notice)


def _context(args: argparse.Namespace, review: Review, snapshot: Snapshot) -> str:
    """One paragraph: which observation the head was planned against, and what it cannot tell."""
    if args.observed is None:
        return f"Planned against Exchange and DNS as observed now ({at(snapshot.observedAt)})."
    meta = _published(args.observed)
    words = [f"Planned against the snapshot observed at {at(snapshot.observedAt)}"]
    revision = str(meta.get("revision") or "")
    if revision:
        words.append(f" while the controller served {revision[:12]}")
    words.append(".")
    acted = meta.get("actionsApplied")
    by_apply = meta.get("applyActions")
    if isinstance(acted, int) and acted > 0:
        which = (
            f" ({by_apply} by stagectl apply)" if isinstance(by_apply, int) and 0 < by_apply < acted else ""
        )
        who = "stagectl apply sent" if by_apply == acted else "The controller applied"
        words.append(
            f" {who} {acted} actions after observing it{which}: the tenant changed since, and the plan may "
            "repeat what they did until the controller's next pass publishes a new snapshot."
        )
    if review.observed_for is None:
        words.append(
            f" The revision it was observed for ({revision[:12] or 'unknown'}) is not in this repository: "
            "records it did not read are taken as absent."
        )
    else:
        unread = sorted(
            f"dns/{r.key}"
            for r in review.planned.records
            if r.key.lower() not in {o.key.lower() for o in review.observed_for.records}
            and snapshot.dns.get(r.zone) is not None
        )
        if unread:
            words.append(
                f" Not read by that observation, so taken as absent: {', '.join(unread)}; "
                "apply --checksum refuses the plan if they exist."
            )
    words.append(
        " stagectl apply --checksum applies this plan only while a fresh observation gives the same actions."
    )
    return "".join(words)
