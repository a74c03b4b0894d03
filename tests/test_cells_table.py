"""fastrnn/_cells.py (what Python knows of each cell kind) agrees with the C cell table
(csrc/cells.h), so that the layers size their parameters and buffers as the loops use them."""
import pytest

from fastrnn import _core
from fastrnn._cells import CELLS


@pytest.mark.parametrize("name", sorted(CELLS))
def test_python_descriptor_matches_the_c_table(name):
    kind = CELLS[name]
    assert _core.MODES[name] == kind.code
    assert _core.cell_info(kind.code) == {"gates": kind.gates, "aux": kind.aux, "states": kind.states,
                                          "shared": kind.shared}
    assert len(kind.gate_names) == kind.gates


def test_every_c_kind_is_described():
    assert sorted(k.code for k in CELLS.values()) == sorted(_core.MODES.values())
    with pytest.raises(ValueError, match="cell must be one of"):
        _core.cell_info(len(CELLS))


@pytest.mark.parametrize("bad", [-1, len(CELLS), 99])
def test_an_unknown_kind_is_refused_before_the_table_is_read(bad):
    import numpy as np
    x = np.zeros((2, 1, 3), np.float32)
    calls = [lambda: _core.gates(bad), lambda: _core.plan_row_ranges(bad, 2, 1, 4, 1),
             lambda: _core.fused_pays(bad, np.float32, 2, 1, 3, 4),
             lambda: _core.project(bad, x, np.zeros((4, 3), np.float32), np.zeros((2, 1, 4), np.float32)),
             lambda: _core.cell_step(bad, x[0], np.zeros((1, 4), np.float32), None, np.zeros((4, 3), np.float32),
                                     np.zeros((4, 4), np.float32), None, None, False)]
    for call in calls:
        with pytest.raises(ValueError, match="cell must be one of"):
            call()
