"""Test-only launcher: the training entry point with a failure injected on one rank (issue 6).

Run it under torchrun like the real entry point. ``PROTLIG_TEST_FAIL_RANK`` and
``PROTLIG_TEST_FAIL_STEP`` name the rank that raises and the optimizer step (1-based) at which it
does, before that step's collectives. Used by tests/test_distributed.py to check that one failing
rank ends the whole launch with a non-zero exit instead of leaving the other ranks hanging.
Kept out of the package on purpose: the library has no failure hooks.
"""

from __future__ import annotations

import os
import sys

from protlig_dd.training.loop import Trainer
from protlig_dd.training.run_train_uniref50_optimized import main

FAIL_RANK = int(os.environ["PROTLIG_TEST_FAIL_RANK"])
FAIL_STEP = int(os.environ["PROTLIG_TEST_FAIL_STEP"])
_real_train_step = Trainer.train_step


class InjectedFailure(RuntimeError):
    """The failure this script injects."""


def _failing_train_step(self: Trainer, micro_batches: list) -> tuple:
    if self.info.rank == FAIL_RANK and self.state.step + 1 == FAIL_STEP:
        raise InjectedFailure(f"injected failure on rank {FAIL_RANK} at step {FAIL_STEP}")
    return _real_train_step(self, micro_batches)


Trainer.train_step = _failing_train_step

if __name__ == "__main__":
    sys.exit(main())
