"""The ledger's exceptions, apart so that the models (which raise one) need not import the ledger.

Every failure the ledger means to report is a `LedgerError` whose message says what and why;
pydantic's `ValidationError` still reports malformed requests.
"""

from __future__ import annotations


class LedgerError(Exception):
    """A ledger operation that could not be done; the message says what and why."""


class IdempotencyConflict(LedgerError):
    """An idempotency key already used for a different operation (other amount, customer or target)."""


class UnknownCustomer(LedgerError):
    """A customer the ledger has no record of."""


class LedgerWriteError(LedgerError):
    """A write that failed in the database; its transaction was rolled back and was not retried."""
