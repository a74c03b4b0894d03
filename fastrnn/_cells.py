"""Cell kinds as data: what the Python layers need to know of each entry of the C cell table
(csrc/cells.h). Nothing here computes; a test checks these sizes against the C table.

Adding a cell kind: its rows and table entry in csrc/cells.h (and its code in fastrnn.h's
fr_cell), an entry here, its math in fastrnn/reference.py, and tests.
"""
from typing import NamedTuple


class CellKind(NamedTuple):
    name: str      # fastrnn.h's fr_cell name, without FR_
    code: int      # fr_cell
    gates: int     # G: gate blocks of G*H rows in weight_ih/weight_hh, PyTorch's order
    aux: int       # A: saved aux columns per hidden unit (fastrnn.h)
    states: int    # 1 (h) or 2 (h, c)
    shared: int    # S: leading gate blocks whose b_hh adds to b_ih (the rest sit inside a gate)
    gate_names: tuple


CELLS = {
    "RNN_TANH": CellKind("RNN_TANH", 0, 1, 0, 1, 1, ("h",)),
    "RNN_RELU": CellKind("RNN_RELU", 1, 1, 0, 1, 1, ("h",)),
    "LSTM": CellKind("LSTM", 2, 4, 2, 2, 4, ("i", "f", "g", "o")),
    "GRU": CellKind("GRU", 3, 3, 1, 1, 2, ("r", "z", "n")),
}
