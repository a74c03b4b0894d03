"""Test-session setup: the suite runs on plan.c's built-in constants, whatever this machine's
caches would derive or `fastrnn tune` cached (tests of the planner assume them, and every
machine then runs the same plan; tests/test_tuning.py turns derivation and the cache back on
where it tests them)."""
import os

os.environ["FASTRNN_DEFAULT_PLAN"] = "1"


import pytest  # noqa: E402


@pytest.fixture
def plan_knobs():
    """Sets csrc/plan.c's overrides and thresholds for one test (fastrnn._core.plan_knobs),
    restoring them afterwards."""
    from fastrnn import _core
    saved = _core.plan_knobs()
    yield _core.plan_knobs
    _core.plan_knobs(**saved)
