"""The floor for in-process scoring: a hand-written branchless C forest, timed row by row in C.

A plain evaluator of LightGBM text models, written the way one would by hand for speed: every tree a flat node
array (leaves are nodes whose children are themselves), eight trees walked in lockstep for the deepest one's
depth, the child picked by the comparison's result, no branches. It ignores LightGBM's missing-value, zero and
categorical rules (NaN simply goes right), so it does strictly less than the product's scorer; no Python runs
between rows, and each row's time is taken in C with ``clock_gettime``. What a request costs above this is the
price of features, encoding, calibration and the response.
"""

from __future__ import annotations

import ctypes
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from propensity.scoring._lgbm_text import parse_model
from propensity.scoring._native import build, compiler

SOURCE = r"""#define _POSIX_C_SOURCE 200112L
#include <stdint.h>
#include <time.h>
typedef struct { double thr; int32_t feat; int32_t child[2]; } fl_node;
typedef struct { const fl_node *nodes; const int32_t *roots; const int32_t *depth; int32_t n_trees; } fl_model;

static double fl_model_eval(const fl_model *m, const double *x) {
    double s = 0.0;
    for (int32_t t = 0; t < m->n_trees; t += 8) {
        int32_t idx[8], steps = 0;
        for (int j = 0; j < 8; j++) {
            int ok = t + j < m->n_trees;
            idx[j] = ok ? m->roots[t + j] : 0;
            if (ok && m->depth[t + j] > steps) steps = m->depth[t + j];
        }
        for (int32_t k = 0; k < steps; k++)
            for (int j = 0; j < 8; j++) idx[j] = m->nodes[idx[j]].child[x[m->nodes[idx[j]].feat] > m->nodes[idx[j]].thr];
        for (int j = 0; j < 8 && t + j < m->n_trees; j++) s += m->nodes[idx[j]].thr;
    }
    return s;
}

/* Scores n_rows rows (n_cols each) through every model; ns[r] is row r's time in nanoseconds, wall clock or
   (cpu != 0) this thread's CPU time. */
void fl_eval(const fl_model *ms, int32_t n_models, const double *x, int64_t n_rows, int32_t n_cols,
             double *out, int64_t *ns, int32_t cpu) {
    struct timespec a, b;
    clockid_t clock = cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
    for (int64_t r = 0; r < n_rows; r++) {
        clock_gettime(clock, &a);
        for (int32_t m = 0; m < n_models; m++) out[r * n_models + m] = fl_model_eval(ms + m, x + r * n_cols);
        clock_gettime(clock, &b);
        ns[r] = (int64_t)(b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec);
    }
}
"""

_NODE = np.dtype([("thr", "<f8"), ("feat", "<i4"), ("left", "<i4"), ("right", "<i4")], align=True)


class _Model(ctypes.Structure):
    _fields_ = [
        ("nodes", ctypes.c_void_p),
        ("roots", ctypes.c_void_p),
        ("depth", ctypes.c_void_p),
        ("n_trees", ctypes.c_int32),
    ]


class BranchlessFloor:
    """The hand-written forest for ``texts`` (LightGBM text models) over inputs mapped by ``columns``."""

    def __init__(self, texts: Sequence[str], columns: Sequence[Sequence[int]], n_columns: int) -> None:
        cc = compiler()
        if cc is None:
            raise RuntimeError("the branchless floor needs a C compiler")
        self._dir = tempfile.TemporaryDirectory(prefix="bench-floor-")
        target = Path(self._dir.name) / "floor.so"
        build(cc, SOURCE, target)
        self._lib = ctypes.CDLL(str(target))
        self.n_columns = n_columns
        self._keep: list[np.ndarray] = []
        self._models = (_Model * len(texts))()
        for m, (text, cols) in enumerate(zip(texts, columns, strict=True)):
            colmap = np.asarray(cols, dtype=np.int32)
            rows: list[tuple[float, int, int, int]] = []
            roots, depths = [], []
            for tree in parse_model(text).trees:
                k, base = len(tree.split_feature), len(rows)
                roots.append(base)
                depths.append(tree.depth())

                def child(c: int, k: int = k, base: int = base) -> int:
                    return base + (c if c >= 0 else k + ~c)

                for i in range(k):
                    rows.append((float(tree.threshold[i]), int(colmap[tree.split_feature[i]]),
                                 child(int(tree.left_child[i])), child(int(tree.right_child[i]))))  # fmt: skip
                rows += [(float(v), 0, base + k + j, base + k + j) for j, v in enumerate(tree.leaf_value)]
            nodes = np.array(rows, dtype=_NODE)
            r32, d32 = np.asarray(roots, np.int32), np.asarray(depths, np.int32)
            self._keep += [nodes, r32, d32]
            self._models[m] = _Model(nodes.ctypes.data, r32.ctypes.data, d32.ctypes.data, len(roots))

    def time_rows(self, x: np.ndarray, *, cpu: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores (rows × models) and each row's time in nanoseconds (wall, or the thread's CPU time)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        out = np.empty((x.shape[0], len(self._models)))
        ns = np.empty(x.shape[0], dtype=np.int64)
        self._lib.fl_eval(self._models, len(self._models), ctypes.c_void_p(x.ctypes.data),
                          ctypes.c_int64(x.shape[0]), self.n_columns, ctypes.c_void_p(out.ctypes.data),
                          ctypes.c_void_p(ns.ctypes.data), int(cpu))  # fmt: skip
        return out, ns
