"""The simulator's migration batch and user cmdlets, following exchange-facts §1–§4 and §9.

Each cmdlet validates everything before it changes anything, so a refused call leaves the state as it was.
Exception types come from the decompiled resource keys of exchange-facts §9.4 where Microsoft gives no
English text; the texts here are the simulator's own wording of them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import timedelta

from controller.sim.exchange import engine
from controller.sim.exchange import state as s
from controller.sim.exchange.params import Bound, check_batch_name, fail, not_found, parse_csv, result_size

Output = list[dict[str, object]]
PERMANENT = "MigrationPermanentException"
TOO_MANY_BATCHES = (
    "The maximum number of migration batches is already running. Please remove a batch before you add "
    "another one."
)


def batch_output(batch: s.Batch) -> dict[str, object]:
    summary = batch.users.summary()  # kept by the batch until one of its users changes
    return {
        "Identity": batch.name,
        "Status": engine.batch_status(batch).value,
        "TotalCount": summary.total,
        # Finalized (completed) users are counted apart, not as synced, as Exchange Online reports them.
        "SyncedCount": summary.count(s.SYNCED_LIKE - {s.UserStatus.COMPLETED}),
        "FailedCount": summary.count([s.UserStatus.FAILED]),
        "ActiveCount": summary.moving,
        "StoppedCount": summary.count([s.UserStatus.STOPPED]),
        "FinalizedCount": summary.count([s.UserStatus.COMPLETED]),
        "NotificationEmails": list(batch.notification_emails),
        "StartAfterUTC": batch.start_after,
        "CompleteAfterUTC": batch.complete_after,
        "LastSyncedDateTime": summary.last_sync,
        "CreationDateTime": batch.created,
        "SourceEndpoint": batch.endpoint,
        "MigrationType": "ExchangeOutlookAnywhere",
        "BatchDirection": "Onboarding",
    }


def user_output(batch: s.Batch, user: s.User) -> dict[str, object]:
    return {
        "Identity": user.identity,
        "EmailAddress": user.identity,
        "BatchId": batch.name,
        "Status": user.status.value,
        "ErrorSummary": user.error,
        "LastSuccessfulSyncTime": user.last_sync,
        "RecipientType": "Mailbox",
    }


def find_batch(state: s.SimState, cmdlet: str, identity: str) -> s.Batch:
    batch = state.batches.get(s.key(identity))
    if batch is None:
        raise not_found(cmdlet, identity)
    return batch


def _start(state: s.SimState, batch: s.Batch, addresses: list[str]) -> None:
    """Admit users; a batch whose StartAfter is in the future waits (assumption: Status `Waiting`)."""
    for address in addresses:
        engine.admit(state, batch, address)
    if batch.phase != s.BatchPhase.COMPLETED:
        waiting = batch.start_after is not None and batch.start_after > state.now
        batch.phase = s.BatchPhase.WAITING if waiting else s.BatchPhase.RUNNING


def new_batch(state: s.SimState, b: Bound) -> Output:
    name = b.text("Name", required=True) or ""
    check_batch_name(b.cmdlet, name)
    endpoint_name = b.text("SourceEndpoint", required=True) or ""
    csv_data = b.data("CSVData")
    if csv_data is None:
        raise fail(b.cmdlet, "ParameterBindingException", "A staged batch needs -CSVData.")
    addresses = parse_csv(b.cmdlet, csv_data, allow_unknown_columns=b.switch("AllowUnknownColumnsInCsv"))
    if s.key(name) in state.batches:
        raise fail(b.cmdlet, PERMANENT, f'A migration batch named "{name}" already exists.')
    if len(state.batches) >= s.MAX_BATCHES:
        raise fail(b.cmdlet, PERMANENT, TOO_MANY_BATCHES)
    endpoint = state.endpoints.get(s.key(endpoint_name))
    if endpoint is None:
        raise fail(
            b.cmdlet,
            "ManagementObjectNotFoundException",
            f"The migration endpoint '{endpoint_name}' couldn't be found. Reason: The migration endpoint "
            f"'{endpoint_name}' couldn't be found.",
        )
    batch = s.Batch(
        name=name,
        endpoint=endpoint.name,
        created=state.now,
        start_after=b.moment("StartAfter"),
        complete_after=b.moment("CompleteAfter"),
        notification_emails=b.strings("NotificationEmails") or [],
        time_zone=b.text("TimeZone"),
        users={s.key(address): s.User(identity=address) for address in addresses},
    )
    state.batches[s.key(name)] = batch
    engine.mark_duplicates(state, batch, list(batch.users))
    if b.switch("AutoStart"):
        _start(state, batch, [a for a, u in batch.users.items() if not u.duplicate])
    engine.advance_to(state, state.now)
    return [batch_output(batch)]


def set_batch(state: s.SimState, b: Bound) -> Output:
    batch = find_batch(state, b.cmdlet, b.text("Identity", required=True) or "")
    csv_data = b.data("CSVData")
    if b.switch("AddUsers") != (csv_data is not None):
        raise fail(b.cmdlet, "ParameterBindingException", "-AddUsers and -CSVData go together.")
    new: list[str] = []
    if csv_data is not None:
        status = engine.batch_status(batch)
        if status in (s.BatchStatus.SYNCING, s.BatchStatus.COMPLETING, s.BatchStatus.WAITING):
            raise fail(
                b.cmdlet,
                PERMANENT,
                "SyncingMigrationJobCannotBeAppendedTo: Users can't be added to migration batch "
                f'"{batch.name}" while it is syncing or completing.',
            )
        if status in (s.BatchStatus.COMPLETED, s.BatchStatus.COMPLETED_WITH_ERRORS):
            raise fail(
                b.cmdlet,
                PERMANENT,
                f'CompletedMigrationJobCannotBeModified: Migration batch "{batch.name}" is completed and '
                "can't be modified.",
            )
        if status == s.BatchStatus.REMOVING:
            raise not_found(b.cmdlet, batch.name)
        # "Only new entries in the CSV file are processed"; the 2,000-row cap is per CSV (the cumulative
        # cap is undocumented: assumption).
        rows = parse_csv(b.cmdlet, csv_data, allow_unknown_columns=b.switch("AllowUnknownColumnsInCsv"))
        new = [address for address in rows if s.key(address) not in batch.users]
    emails = b.strings("NotificationEmails")
    start_after, complete_after = b.moment("StartAfter"), b.moment("CompleteAfter")
    for address in new:
        batch.users[s.key(address)] = s.User(identity=address)
    engine.mark_duplicates(state, batch, [s.key(address) for address in new])
    if emails is not None:
        batch.notification_emails = emails
    if complete_after is not None:
        batch.complete_after = complete_after
    if start_after is not None:
        batch.start_after = start_after
        if batch.phase == s.BatchPhase.WAITING and start_after <= state.now:
            batch.phase = s.BatchPhase.RUNNING
    if new and batch.phase in (s.BatchPhase.RUNNING, s.BatchPhase.WAITING):
        for address in new:
            if not batch.users[s.key(address)].duplicate:
                engine.admit(state, batch, s.key(address))
    engine.advance_to(state, state.now)
    return []


def start_batch(state: s.SimState, b: Bound) -> Output:
    batch = find_batch(state, b.cmdlet, b.text("Identity", required=True) or "")
    status = engine.batch_status(batch)
    failed = [a for a, u in batch.users.items() if u.status == s.UserStatus.FAILED]
    if status in (s.BatchStatus.CREATED, s.BatchStatus.STOPPED):
        _start(state, batch, [a for a, u in batch.users.items() if u.status != s.UserStatus.SYNCED])
    elif status in (
        s.BatchStatus.FAILED,
        s.BatchStatus.SYNCED_WITH_ERRORS,
        s.BatchStatus.COMPLETED_WITH_ERRORS,
    ):
        _start(state, batch, failed)  # "retry failures within a Failed or Synced with Errors batch"
    else:
        key = {
            s.BatchStatus.STOPPING: "StoppingMigrationJobCannotBeStarted",
            s.BatchStatus.REMOVING: "RemovedMigrationJobCannotBeStarted",
        }.get(status, "MigrationJobAlreadyStarted")
        raise fail(
            b.cmdlet, PERMANENT, f'{key}: Migration batch "{batch.name}" can\'t be started: it is {status}.'
        )
    engine.advance_to(state, state.now)
    return []


def stop_batch(state: s.SimState, b: Bound) -> Output:
    batch = find_batch(state, b.cmdlet, b.text("Identity", required=True) or "")
    status = engine.batch_status(batch)
    if status not in (s.BatchStatus.SYNCING, s.BatchStatus.WAITING):
        # "If all migration requests in a migration batch are completed or failed, this cmdlet doesn't run."
        key = {
            s.BatchStatus.STOPPED: "MigrationJobAlreadyStopped",
            s.BatchStatus.STOPPING: "MigrationJobAlreadyStopping",
        }.get(status, "MigrationJobCannotBeStopped")
        raise fail(
            b.cmdlet, PERMANENT, f'{key}: Migration batch "{batch.name}" can\'t be stopped: it is {status}.'
        )
    for user in batch.users.values():
        if user.status in s.MOVING:
            user.status, user.due = s.UserStatus.STOPPED, None
    batch.phase, batch.transition_at = s.BatchPhase.STOPPING, state.now + timedelta(seconds=s.STOP_SECONDS)
    engine.advance_to(state, state.now)
    return []


def complete_batch(state: s.SimState, b: Bound) -> Output:
    batch = find_batch(state, b.cmdlet, b.text("Identity", required=True) or "")
    # exchange-facts §8, §9.4 (C): one exception, MigrationBatchCannotBeCompletedException, three resource
    # keys: not supported (Outlook Anywhere), not SyncCompleted, already completed. The gateway serialises it
    # as EXO shows a cmdlet error (§9.0): the type, `[FailureCategory=Cmdlet-<type>]` in the
    # FullyQualifiedErrorId, the message. No English text is known for these keys (§9.5), so the key heads
    # the message (assumption), which is where the client looks for it (controller/exchange/refusals.py).
    if state.completion == s.Completion.UNSUPPORTED:
        raise fail(
            b.cmdlet,
            "MigrationBatchCannotBeCompletedException",
            f'CompleteMigrationBatchNotSupported: Migration batch "{batch.name}" can\'t be completed: '
            "finalization isn't supported for this type of migration.",
        )
    status = engine.batch_status(batch)
    if status not in (s.BatchStatus.SYNCED, s.BatchStatus.SYNCED_WITH_ERRORS):
        key = (
            "MigrationJobCannotRetryCompletion"
            if batch.phase == s.BatchPhase.COMPLETED
            else "MigrationJobCannotBeCompleted"
        )
        raise fail(
            b.cmdlet,
            "MigrationBatchCannotBeCompletedException",
            f'{key}: Migration batch "{batch.name}" can\'t be completed: it is {status}; only Synced or '
            "SyncedWithErrors batches can be completed.",
        )
    for user in batch.users.values():
        if user.status == s.UserStatus.SYNCED:
            user.status = s.UserStatus.COMPLETING
    batch.complete_after = state.now  # "sets the CompleteAfter value to the current UTC time"
    batch.phase, batch.transition_at = (
        s.BatchPhase.COMPLETING,
        state.now + timedelta(seconds=s.COMPLETE_SECONDS),
    )
    return []


def remove_batch(state: s.SimState, b: Bound) -> Output:
    batch = find_batch(state, b.cmdlet, b.text("Identity", required=True) or "")
    status = engine.batch_status(batch)
    if status in (s.BatchStatus.SYNCING, s.BatchStatus.COMPLETING):
        raise fail(
            b.cmdlet,
            "LocalizedException",
            f'MigrationJobCannotBeRemoved: Migration batch "{batch.name}" can\'t be removed while it is '
            f"{status}.",
        )
    if status != s.BatchStatus.REMOVING:
        for user in batch.users.values():
            user.status, user.due = s.UserStatus.REMOVING, None
        batch.phase, batch.transition_at = (
            s.BatchPhase.REMOVING,
            state.now + timedelta(seconds=s.REMOVE_SECONDS),
        )
    return []


def get_batch(state: s.SimState, b: Bound) -> Output:
    identity = b.text("Identity")
    if identity is not None:
        return [batch_output(find_batch(state, b.cmdlet, identity))]
    size = result_size(b)
    return [batch_output(batch) for batch in list(state.batches.values())[:size]]


def get_user(state: s.SimState, b: Bound) -> Output:
    identity, batch_id = b.text("Identity"), b.text("BatchId")
    scope: Iterable[s.Batch] = state.batches.values()
    if batch_id is not None:
        scope = [find_batch(state, b.cmdlet, batch_id)]  # that batch's users only
    size = result_size(b)
    if identity is not None:
        address = s.key(identity)
        holders = _holders(state, address) if batch_id is None else [x for x in scope if address in x.users]
        if holders:
            return [user_output(batch, batch.users[address]) for batch in holders[:size]]
        # exchange-facts §3: a null *or non-existent* -Identity returns all objects.
    pairs = ((batch, user) for batch in scope for user in batch.users.values())
    return [user_output(batch, user) for batch, user in itertools.islice(pairs, size)]


def _holders(state: s.SimState, address: str) -> list[s.Batch]:
    """The batches `address` is a user of, in batch order."""
    return [state.batches[key] for key in state.batches.holding(address)]


def remove_user(state: s.SimState, b: Bound) -> Output:
    identity = b.text("Identity", required=True) or ""
    holders = _holders(state, s.key(identity))
    if not holders:
        raise not_found(b.cmdlet, identity)
    # The real member goes first: removing it is the documented fix for a duplicate elsewhere (row 1.6).
    owner = next((batch for batch in holders if not batch.users[s.key(identity)].duplicate), holders[0])
    del owner.users[s.key(identity)]
    engine.advance_to(state, state.now)
    return []


def get_user_statistics(state: s.SimState, b: Bound) -> Output:
    identity = b.text("Identity", required=True) or ""
    for batch in _holders(state, s.key(identity)):
        user = batch.users.get(s.key(identity))
        if user is not None:
            stats = user_output(batch, user)
            stats.update(
                Error=user.error,
                SyncedItemCount=0 if user.last_sync is None else 1,
                SkippedItemCount=0,
                StatusSummary=_summary(user.status),
            )
            return [stats]
    raise not_found(b.cmdlet, identity)


def _summary(status: s.UserStatus) -> str:
    return {
        s.UserStatus.FAILED: "Failed",
        s.UserStatus.SYNCED: "Synced",
        s.UserStatus.COMPLETED: "Completed",
        s.UserStatus.STOPPED: "Stopped",
    }.get(status, "Active")
