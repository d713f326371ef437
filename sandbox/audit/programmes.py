"""Linear programmes whose constraints stay while their objective changes: one HiGHS model per space searched.

The dominance searches solve many programmes over one set of constraints, one objective per set of taxpayers
tried. Kept as one HiGHS model (highspy), each solve starts from the last one's optimal basis, which is a few
simplex iterations away, where a fresh ``scipy.optimize.linprog`` call builds and solves the model anew.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import highspy
import numpy as np
from scipy.sparse import csc_matrix

def _without_banner() -> None:
    """HiGHS prints its banner to the process's standard output when the process makes its first model, before any
    option can be set: that one is made here, at import (with the sandbox's other modules, before any thread
    serves), with file descriptor 1 pointed at /dev/null. A CLI's ``--json`` output must stay JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_without_banner()


def _quiet_model() -> Any:
    """A HiGHS model that prints nothing."""
    model = highspy.Highs()
    model.setOptionValue("output_flag", False)
    return model


class Programme:
    """max ``c . x`` subject to ``A x <= b`` and ``lower <= x <= upper`` (None: unbounded), for objectives ``c``
    given one at a time."""

    def __init__(self, a_ub: Any, b_ub: np.ndarray, lower: list[float | None], upper: list[float | None]) -> None:
        inf = highspy.kHighsInf
        matrix = csc_matrix(a_ub)
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = matrix.shape[1], matrix.shape[0]
        lp.col_cost_ = np.zeros(matrix.shape[1])
        lp.col_lower_ = np.array([-inf if v is None else v for v in lower], dtype=float)
        lp.col_upper_ = np.array([inf if v is None else v for v in upper], dtype=float)
        lp.row_lower_ = np.full(matrix.shape[0], -inf)
        lp.row_upper_ = np.asarray(b_ub, dtype=float)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = matrix.indptr.astype(np.int32)
        lp.a_matrix_.index_ = matrix.indices.astype(np.int32)
        lp.a_matrix_.value_ = matrix.data.astype(float)
        lp.sense_ = highspy.ObjSense.kMaximize
        self._model = _quiet_model()
        self._model.passModel(lp)
        self.matrix = matrix
        self._columns = np.arange(matrix.shape[1], dtype=np.int32)

    def duals(self) -> tuple[np.ndarray, np.ndarray]:
        """The last optimum's row and column duals, ``y >= 0`` and ``d`` with ``A^T y + d = c`` (HiGHS's
        convention for a maximum under rows ``<= b``), to within the solver's tolerance."""
        solution = self._model.getSolution()
        return np.array(solution.row_dual), np.array(solution.col_dual)

    def maximise(self, objective: np.ndarray) -> tuple[str, float, np.ndarray]:
        """The programme's status (``optimal``, ``unbounded`` or HiGHS's own word), its optimum and an x that
        attains it."""
        model = self._model
        model.changeColsCost(len(self._columns), self._columns, np.asarray(objective, dtype=float))
        model.run()
        status = model.getModelStatus()
        if status == highspy.HighsModelStatus.kOptimal:
            return "optimal", float(model.getInfo().objective_function_value), np.array(model.getSolution().col_value)
        if status in (highspy.HighsModelStatus.kUnbounded, highspy.HighsModelStatus.kUnboundedOrInfeasible):
            return "unbounded", float("inf"), np.zeros(len(self._columns))
        return model.modelStatusToString(status), float("nan"), np.zeros(len(self._columns))
