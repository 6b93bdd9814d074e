"""What kind of refusal a Complete-MigrationBatch error is (exchange-facts §8, §9.4).

Exchange refuses completion with one exception family for different reasons, told apart by the resource
key of the message (C items of exchange-facts §9.4, from decompiled on-prem code):

- `CompleteMigrationBatchNotSupported`: the batch type does not support finalization (Outlook Anywhere
  batches). Final: the controller remembers it and counts Synced as complete (contract §4).
- `MigrationJobCannotBeCompleted`: the batch is not SyncCompleted (still syncing, completing, ...).
- `MigrationJobCannotRetryCompletion`: the batch is already completed.
- a transient exception (a real EXO sample: `[FailureCategory=Cmdlet-
  MigrationBatchCannotBeCompletedTransientException]`, exchange-facts §9.4): a passing condition.

All but the first are ordinary failures: nothing is remembered and the next pass decides from what it
observes. The exception type alone never decides "not supported": `MigrationBatchCannotBeCompletedException`
carries all three keys, and the decompiled code also raises the not-supported key as a
`MigrationPermanentException` (where multi-batch finalization is off), so the key decides whatever the type.

**Assumption** (exchange-facts §9.5: no English text was found for any C key). The key is looked for as a
whole word in every text the client receives with the ErrorRecord: the exception's message, the
FullyQualifiedErrorId with its FailureCategory, ErrorDetails and the exception's other string properties
and inner exceptions (`psrp_values.record_error`). The simulator and the gateway put the key at the head of
the message, as for every C key. If a real EXO record carries the key nowhere, the refusal is OTHER: an
ordinary failure each pass, the cutover held by the batches-completed gate; never a wrong cutover.
"""

from __future__ import annotations

from enum import StrEnum

from controller.exchange.errors import CmdletError


class Refusal(StrEnum):
    NOT_SUPPORTED = "not supported"
    NOT_SYNCED = "not synced"
    ALREADY_COMPLETED = "already completed"
    TRANSIENT = "transient"
    OTHER = "other"


NOT_SUPPORTED_KEY = "CompleteMigrationBatchNotSupported"
KEYS = {
    NOT_SUPPORTED_KEY: Refusal.NOT_SUPPORTED,
    "MigrationJobCannotBeCompleted": Refusal.NOT_SYNCED,
    "MigrationJobCannotRetryCompletion": Refusal.ALREADY_COMPLETED,
}

# What the outcome says beside Exchange's own words; the NOT_SUPPORTED text is the applier's success.
EXPLAINED = {
    Refusal.NOT_SYNCED: "the batch is not Synced yet",
    Refusal.ALREADY_COMPLETED: "the batch is already completed",
    Refusal.TRANSIENT: "a passing condition",
    Refusal.OTHER: f"no reason this controller knows ({NOT_SUPPORTED_KEY} not named)",
}


def completion_refusal(error: CmdletError) -> Refusal:
    """The kind of refusal of a Complete-MigrationBatch error: by its resource key, or its FailureCategory
    (or exception type) when that says transient; OTHER when neither tells, or the keys contradict."""
    category_type = error.category.removeprefix("Cmdlet-")
    if any(name.endswith("TransientException") for name in (error.exception_type, category_type)):
        return Refusal.TRANSIENT
    named = {refusal for key, refusal in KEYS.items() if error.names(key)}
    if len(named) == 1:
        return named.pop()
    return Refusal.OTHER


def explain(refusal: Refusal) -> str:
    """Why a refusal other than NOT_SUPPORTED is not remembered, for the outcome's detail."""
    return (
        f"Exchange refused completion: {EXPLAINED.get(refusal, refusal.value)}; not remembered as "
        "unsupported, the next pass decides from what it observes"
    )
