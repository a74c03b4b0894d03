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
