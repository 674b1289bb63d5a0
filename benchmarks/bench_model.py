"""The model-checked payments core (tests/payments/faults/test_model.py) at scale: the same
hypothesis state machine with `BENCH_MODEL_EXAMPLES` (default 20,000) generated runs.

Reports the runs and the violations (a failing run stops hypothesis, which then shrinks
it to a minimal example: printed, and the benchmark fails). The model tolerates nothing:
the three bugs it once counted (test_findings.test_bug_a/b/c_*) are fixed."""

from __future__ import annotations

import logging
import os
import platform
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.payments.faults import test_model as model


@pytest.mark.timeout(6 * 3600)
def test_model_checked_payments_core() -> None:
    examples = int(os.environ.get("BENCH_MODEL_EXAMPLES", "20000"))
    logging.disable(logging.CRITICAL)
    started = time.perf_counter()
    violation: BaseException | None = None
    try:
        run_state_machine_as_test(model.PaymentsMachine, settings=settings(
            max_examples=examples, stateful_step_count=20, deadline=None, database=None,
            suppress_health_check=list(HealthCheck)))
    except BaseException as exc:
        violation = exc
    finally:
        logging.disable(logging.NOTSET)
    elapsed = time.perf_counter() - started
    runs = model.RUNS
    print(f"\nmodel: {runs['count']} runs ({examples} examples asked) in {elapsed:.0f} s on "
          f"{platform.machine()} / Python {platform.python_version()}; "
          f"violations: {0 if violation is None else 1}")
    if violation is not None:
        raise violation
