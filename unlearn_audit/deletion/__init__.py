"""Deletion as a service (DESIGN §2.3, §8): what happens after training, on disk and through the ledger.

* :mod:`~unlearn_audit.deletion.trained_run`: the trained run a finished training leaves (base weights,
  approximators, ids, schedule, certificate constants), saved and loaded with checksums.
* :mod:`~unlearn_audit.deletion.service`: :class:`DurableUnlearner`, deletions through the ledger with certified
  releases, and :func:`forget_from_file` (the ``forget`` command's library side).
* :mod:`~unlearn_audit.deletion.ledger`: the SQLite deletion ledger (standalone).
* :mod:`~unlearn_audit.deletion.requests`: request ids, record ids, request files.
* :mod:`~unlearn_audit.deletion.precompute`: the sharded approximator precompute on ``torch.distributed``.

The engine (:mod:`unlearn_audit.hfocu`) computes; this package stores and serves. Imports point from here to the
engine and to :mod:`unlearn_audit.certify`, never back.
"""

from unlearn_audit.deletion.errors import DurableError, TrainedRunError
from unlearn_audit.deletion.ledger import AlreadyApplied, Ledger, LedgerEntry, LedgerError
from unlearn_audit.deletion.requests import default_request_id, read_request_file
from unlearn_audit.deletion.service import DurableUnlearner, ForgetReceipt, forget_from_file, state_hash
from unlearn_audit.deletion.trained_run import TrainedRun, find_trained_run, load_trained_run, save_trained_run

__all__ = ["AlreadyApplied", "DurableError", "DurableUnlearner", "ForgetReceipt", "Ledger", "LedgerEntry",
           "LedgerError", "TrainedRun", "TrainedRunError", "default_request_id", "find_trained_run",
           "forget_from_file", "load_trained_run", "read_request_file", "save_trained_run", "state_hash"]
