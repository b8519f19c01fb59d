"""The compiled fast scorer: LightGBM text models evaluated without LightGBM, for one row or millions.

Models are parsed from LightGBM's text format (our own parser, :mod:`propensity.scoring._lgbm_text`); several
models (one per action) are scored together over one shared input vector, so scoring a customer for every action
is one call. Two evaluators give the same numbers:

* **native** (default): the trees compiled per model to C (:mod:`propensity.scoring._codegen`: a branch-free
  lockstep walk, every split one comparison), built once per bundle with the system C compiler and cached beside
  the bundle (``cache_dir``) or in the user cache (:mod:`propensity.scoring._native`); called through ctypes. One
  row of five 200-tree models takes tens of microseconds; batches run the same code on several threads (ctypes
  releases the GIL).
* **numpy**: a vectorised evaluator over (rows × trees), used when no C compiler exists (with a warning) or
  when ``PROPENSITY_SCORER=numpy``.

Both reproduce LightGBM's prediction exactly (the tests compare them with ``Booster.predict`` on thousands of
rows and on random tree structures), including its missing-value rules: inputs with ``|x| ≤ 1e-35`` read as 0;
for a numerical split, NaN goes the default way when the split's missing type is NaN and is read as 0 otherwise,
and with the zero missing type (``zero_as_missing``) 0 goes the default way; for a categorical split the value is
truncated to an integer and NaN, negative or unlisted categories go right; trees are summed in order, and an
averaged model's (random forest) sum is divided by the number of trees, as LightGBM's prediction does. Linear trees and multi-class models are refused
with :class:`ModelFormatError`.

:class:`ModelSet` puts the other kinds a bundle may serve (the linear model, and blends of it with LightGBM)
beside the compiled trees, behind the same interface.

>>> import numpy as np, lightgbm as lgb
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(200, 3)); y = (x[:, 0] > 0).astype(int)
>>> booster = lgb.train({"objective": "binary", "verbosity": -1}, lgb.Dataset(x, y), num_boost_round=5)
>>> scorer = CompiledScorer.from_texts([booster.model_to_string()])
>>> bool(np.allclose(scorer.predict(x)[:, 0], booster.predict(x), rtol=0, atol=1e-12))
True
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from propensity.scoring import _codegen
from propensity.scoring._lgbm_text import CATEGORICAL_MASK, ModelFormatError, ParsedModel, parse_model
from propensity.scoring._native import load_native, load_program

__all__ = ["CompiledScorer", "ModelFormatError", "ModelSet", "ModelSpec", "parse_model"]

NODE_DTYPE = np.dtype(
    [("thr", "<f8"), ("feat", "<i4"), ("left", "<i4"), ("right", "<i4"), ("flags", "<i4")], align=True
)
ZERO_THRESHOLD = 1.0000000180025095e-35  # LightGBM's kZeroThreshold (1e-35f)
_NAN_LEFT = 16  # packed flag: a NaN input goes left at this numerical split
_LEAF = 32  # packed flag: a leaf (self-loop node whose thr is the leaf value)
_SLOW = 64  # packed flag: categorical or zero-as-missing split (the native evaluator's slow path)
_MIN_ROWS_PER_THREAD = 1024
_NUMPY_CHUNK_CELLS = 1 << 21  # rows × trees per numpy step


def _exp(z: float) -> float:
    try:
        return math.exp(z)
    except OverflowError:
        return math.inf


def _sigmoid(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class _PfSet(ctypes.Structure):
    _fields_ = [
        ("nodes", ctypes.c_void_p),
        ("bits", ctypes.c_void_p),
        ("roots", ctypes.c_void_p),
        ("depth", ctypes.c_void_p),
        ("model_start", ctypes.c_void_p),
        ("n_models", ctypes.c_int64),
        ("n_cols", ctypes.c_int64),
    ]


class CompiledScorer:
    """Several LightGBM models over one input vector of ``n_columns`` values, evaluated natively or by numpy.

    ``columns[m][j]`` is the input column holding model ``m``'s feature ``j`` (default: the identity, which
    needs every model to have ``n_columns`` features). ``raw`` returns ``rows × models`` raw scores (log-odds
    for a binary model); ``predict`` applies each model's objective (the sigmoid for binary).
    """

    def __init__(
        self,
        models: Sequence[ParsedModel],
        columns: Sequence[Sequence[int]] | None = None,
        *,
        n_columns: int | None = None,
        backend: Literal["auto", "native", "numpy"] = "auto",
        cache_dir: Path | str | None = None,
    ) -> None:
        if not models:
            raise ValueError("CompiledScorer needs at least one model")
        if columns is None:
            columns = [list(range(m.num_features)) for m in models]
        if len(columns) != len(models):
            raise ValueError(f"columns has {len(columns)} entries for {len(models)} models")
        width = (
            n_columns if n_columns is not None else max((max(c, default=-1) + 1 for c in columns), default=0)
        )
        for m, (model, cols) in enumerate(zip(models, columns, strict=True)):
            if len(cols) != model.num_features:
                raise ValueError(
                    f"model {m} has {model.num_features} features but {len(cols)} columns were mapped"
                )
            if any(c < 0 or c >= width for c in cols):
                raise ValueError(f"model {m} maps a feature outside the {width} input columns")
        self.models = list(models)
        self.n_columns = width
        self.n_models = len(models)
        self._pack(columns)
        self._program: _codegen.Program | None = None
        self._prog_lib: ctypes.CDLL | None = None
        if backend != "numpy":
            program = _codegen.generate(self.models, columns, self.n_columns)
            folders = [Path(cache_dir)] if cache_dir is not None else []
            self._prog_lib = load_program(program.source, folders)
            if self._prog_lib is not None:
                self._program = program
                self._node_ptrs = (ctypes.c_void_p * self.n_models)(*(a.ctypes.data for a in program.nodes))
                self._row_fn = self._prog_lib.pf_row
                self._rows_fn = self._prog_lib.pf_rows
                self._tls = threading.local()
        if backend == "native" and self._prog_lib is None:
            raise RuntimeError("the native scorer is not available (no working C compiler)")
        self.backend: Literal["native", "numpy"] = "native" if self._prog_lib is not None else "numpy"
        self._generic: ctypes.CDLL | None = None
        self._set_ptr = 0

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        columns: Sequence[Sequence[int]] | None = None,
        *,
        n_columns: int | None = None,
        backend: Literal["auto", "native", "numpy"] = "auto",
        cache_dir: Path | str | None = None,
    ) -> CompiledScorer:
        """Parse LightGBM text models (``Booster.model_to_string()``) and compile them (or load them compiled
        from ``cache_dir``, a bundle's ``compiled/`` folder)."""
        return cls(
            [parse_model(t) for t in texts],
            columns,
            n_columns=n_columns,
            backend=backend,
            cache_dir=cache_dir,
        )

    # -- packing -------------------------------------------------------------------------------------------
    def _pack(self, columns: Sequence[Sequence[int]]) -> None:
        """One node array for every tree of every model; leaves are self-loop nodes holding their value.

        Node 0 is a leaf of value 0 (the native evaluator pads lockstep groups with it).
        """
        parts = [np.zeros(1, dtype=NODE_DTYPE)]
        value_parts = [np.zeros(1)]
        tree_model: list[int] = []
        has_values = True
        bit_parts: list[np.ndarray] = []
        roots: list[int] = []
        depths: list[int] = []
        model_start = [0]
        n_nodes, n_bits = 1, 0
        for model, cols in zip(self.models, columns, strict=True):
            colmap = np.asarray(cols, dtype=np.int32)
            for tree in model.trees:
                k, n_leaves = len(tree.split_feature), len(tree.leaf_value)
                nodes = np.zeros(k + n_leaves, dtype=NODE_DTYPE)
                leaf_base = n_nodes + k
                leaf_ids = np.arange(leaf_base, leaf_base + n_leaves, dtype=np.int32)
                nodes["thr"][k:] = tree.leaf_value
                nodes["left"][k:] = leaf_ids
                nodes["right"][k:] = leaf_ids
                nodes["flags"][k:] = _LEAF
                if k:
                    nodes["feat"][:k] = colmap[tree.split_feature]
                    for side, child in (("left", tree.left_child), ("right", tree.right_child)):
                        nodes[side][:k] = np.where(child >= 0, child + n_nodes, leaf_base + ~child)
                    flags = (tree.decision_type & 0xF).astype(np.int64)
                    missing_type = (flags >> 2) & 3
                    nan_left = np.where(missing_type == 2, (flags & 2) != 0, tree.threshold >= 0.0)
                    flags |= np.where(nan_left, _NAN_LEFT, 0)
                    flags |= np.where((missing_type == 1) | ((flags & CATEGORICAL_MASK) != 0), _SLOW, 0)
                    thr = tree.threshold.copy()
                    cat = (tree.decision_type & CATEGORICAL_MASK) != 0
                    if cat.any():
                        idx = tree.threshold[cat].astype(np.int64)
                        start = tree.cat_boundaries[idx].astype(np.int64)
                        length = tree.cat_boundaries[idx + 1].astype(np.int64) - start
                        thr[cat] = start + n_bits
                        flags[cat] |= length << 8
                        bit_parts.append(tree.cat_threshold)
                        n_bits += len(tree.cat_threshold)
                    nodes["thr"][:k] = thr
                    nodes["flags"][:k] = flags
                node_values = np.zeros(k + n_leaves)
                node_values[k:] = tree.leaf_value
                if k:
                    if tree.internal_value is None:
                        has_values = False
                    else:
                        node_values[:k] = tree.internal_value
                value_parts.append(node_values)
                tree_model.append(len(model_start) - 1)
                roots.append(n_nodes if k else leaf_base)
                depths.append(tree.depth())
                parts.append(nodes)
                n_nodes += k + n_leaves
            model_start.append(len(roots))
        if n_nodes >= 2**31:
            raise ModelFormatError("the models are too large to pack (over 2^31 nodes)")
        self._nodes = np.ascontiguousarray(np.concatenate(parts))
        self._node_values = np.concatenate(value_parts) if has_values else None
        self._tree_model = np.asarray(tree_model, dtype=np.int64)
        self._bits = np.ascontiguousarray(
            np.concatenate([*bit_parts, np.zeros(1, np.uint32)]), dtype=np.uint32
        )
        self._roots = np.asarray(roots, dtype=np.int32)
        self._depth = np.asarray(depths, dtype=np.int32)
        self._model_start = np.asarray(model_start, dtype=np.int32)
        self._max_depth = max(depths, default=0)
        # An averaged model (random forest): the raw score here is what LightGBM's prediction converts, the sum
        # of the trees divided by their number (LightGBM's raw_score output skips that division).
        self._divisor = np.array(
            [float(max(1, len(m.trees))) if m.average_output else 1.0 for m in self.models], dtype=np.float64
        )
        self._scale = 1.0 / self._divisor
        self._averaged = bool((self._divisor != 1.0).any())
        self._sigmoid = np.array([m.sigmoid if m.objective == "binary" else 0.0 for m in self.models])

    # -- evaluation ----------------------------------------------------------------------------------------
    def raw(self, x: np.ndarray, *, threads: int = 1) -> np.ndarray:
        """Raw scores, ``rows × models``, for a ``rows × n_columns`` float matrix (NaN = missing); ``threads``
        splits the rows between that many threads (native only)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.n_columns:
            raise ValueError(f"expected a matrix with {self.n_columns} columns, got shape {x.shape}")
        n = x.shape[0]
        out = np.empty((n, self.n_models), dtype=np.float64)
        if n == 0:
            return out
        if self._program is None:
            self._raw_numpy(x, out)
        else:
            threads = max(1, min(threads, n // _MIN_ROWS_PER_THREAD))
            bounds = np.linspace(0, n, threads + 1).astype(np.int64)
            width = self._program.width
            fn, nodes = self._rows_fn, self._node_ptrs

            def run(i: int) -> None:
                a, b = int(bounds[i]), int(bounds[i + 1])
                work = np.empty(width)
                fn(nodes, x[a:b].ctypes.data, b - a, out[a:b].ctypes.data, work.ctypes.data)

            if threads == 1:
                run(0)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(run, range(threads)))
        if self._averaged:
            out /= self._divisor
        return out

    def predict(self, x: np.ndarray, *, threads: int = 1) -> np.ndarray:
        """``rows × models`` predictions: probabilities for binary models, raw values otherwise."""
        return self._transform(self.raw(x, threads=threads))

    def raw_one(self, row: Sequence[float] | np.ndarray) -> list[float]:
        """Raw scores of every model for one input vector (the serving path: no numpy work when native)."""
        if len(row) != self.n_columns:
            raise ValueError(f"expected {self.n_columns} values, got {len(row)}")
        if self._program is None:
            return [float(v) for v in self.raw(np.asarray(row, dtype=np.float64))[0]]
        tls = self._tls
        try:
            buf, out, work = tls.buffers
        except AttributeError:
            buf = (ctypes.c_double * self.n_columns)()
            out = (ctypes.c_double * self.n_models)()
            work = (ctypes.c_double * self._program.width)()
            tls.buffers = (buf, out, work)
        buf[:] = row
        self._row_fn(self._node_ptrs, buf, out, work)
        if self._averaged:
            return [v / d for v, d in zip(out, self._divisor.tolist(), strict=True)]
        return out[:]

    def predict_one(self, row: Sequence[float] | np.ndarray) -> list[float]:
        raw = self.raw_one(row)
        return [_sigmoid(s * r) if s else r for r, s in zip(raw, self._sigmoid.tolist(), strict=True)]

    def exp(self, x: np.ndarray) -> np.ndarray:
        """``exp`` of every value, computed by the C library's ``exp`` as Python's :func:`math.exp` and
        LightGBM are (numpy's own ``exp`` differs in the last bit for about 5% of values)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        out = np.empty_like(x)
        if self._program is not None:
            self._prog_lib.pf_exp(x.ctypes.data, x.size, out.ctypes.data)  # type: ignore[union-attr]
        elif x.size:
            out.reshape(-1)[:] = np.fromiter(map(_exp, x.reshape(-1).tolist()), np.float64, x.size)
        return out

    def _transform(self, raw: np.ndarray) -> np.ndarray:
        out = raw.copy()
        for m, s in enumerate(self._sigmoid.tolist()):
            if s:
                out[:, m] = 1.0 / (1.0 + self.exp(-s * raw[:, m]))
        return out

    # -- the numpy evaluator -------------------------------------------------------------------------------
    def _numpy_arrays(self) -> dict[str, np.ndarray]:
        nodes = self._nodes
        return {
            "feat": nodes["feat"].astype(np.int64),
            "thr": nodes["thr"],
            "flags": nodes["flags"].astype(np.int64),
            "left": nodes["left"].astype(np.int64),
            "right": nodes["right"].astype(np.int64),
            "bits": self._bits.astype(np.int64),
        }

    @staticmethod
    def _numpy_step(
        a: dict[str, np.ndarray], xc: np.ndarray, rows: np.ndarray, cur: np.ndarray
    ) -> np.ndarray:
        """One step of every walk in ``cur`` (node indices, rows × trees) on the pre-zeroed rows ``xc``."""
        v = xc[rows, a["feat"][cur]]
        fl = a["flags"][cur]
        thr = a["thr"][cur]
        nan = np.isnan(v)
        go_left = (v <= thr) | (nan & ((fl & _NAN_LEFT) != 0))
        zero_missing = (((fl >> 2) & 3) == 1) & (nan | (v == 0.0))
        go_left = np.where(zero_missing, (fl & 2) != 0, go_left)
        is_cat = (fl & CATEGORICAL_MASK) != 0
        if is_cat.any():
            ok = is_cat & (v > -1.0) & (v < 2147483648.0)
            iv = np.where(ok, v, 0.0).astype(np.int64)
            word = iv >> 5
            ok &= word < (fl >> 8)
            b = a["bits"][np.where(ok, np.where(ok, thr, 0.0).astype(np.int64) + word, 0)]
            go_left = np.where(is_cat, ok & (((b >> (iv & 31)) & 1) == 1), go_left)
        return np.where(go_left, a["left"][cur], a["right"][cur])

    def _raw_numpy(self, x: np.ndarray, out: np.ndarray) -> None:
        """Every (row, tree) pair walks ``max_depth`` steps at once; leaves loop on themselves."""
        a = self._numpy_arrays()
        n_trees = len(self._roots)
        step = max(1, _NUMPY_CHUNK_CELLS // max(1, n_trees))
        for lo in range(0, x.shape[0], step):
            xc = x[lo : lo + step]
            xc = np.where(np.abs(xc) <= ZERO_THRESHOLD, 0.0, xc)
            rows = np.arange(xc.shape[0])[:, None]
            cur = np.broadcast_to(self._roots.astype(np.int64), (xc.shape[0], n_trees)).copy()
            for _ in range(self._max_depth):
                cur = self._numpy_step(a, xc, rows, cur)
            values = a["thr"][cur]
            for m in range(self.n_models):
                t0, t1 = int(self._model_start[m]), int(self._model_start[m + 1])
                acc = np.zeros(xc.shape[0])
                for t in range(t0, t1):  # in tree order, as LightGBM sums
                    acc += values[:, t]
                out[lo : lo + xc.shape[0], m] = acc

    # -- explanations --------------------------------------------------------------------------------------
    def _contrib_lib(self) -> ctypes.CDLL | None:
        """The generic native walker for attributions (loaded on first use), None on the numpy backend."""
        if self._program is None:
            return None
        if self._generic is None:
            lib = load_native()
            if lib is None:
                return None
            self._set = _PfSet(
                self._nodes.ctypes.data,
                self._bits.ctypes.data,
                self._roots.ctypes.data,
                self._depth.ctypes.data,
                self._model_start.ctypes.data,
                self.n_models,
                self.n_columns,
            )
            self._set_ptr = ctypes.addressof(self._set)
            self._generic = lib
        return self._generic

    def contributions(self, x: np.ndarray, model: int, *, threads: int = 1) -> np.ndarray:
        """Path attributions (as :meth:`contributions_one`, without the bias column) of model ``model`` for many
        rows: ``rows × n_columns`` in raw-score units. Native when available (batch reason codes for millions
        of rows; ``threads`` splits the rows between that many threads), else a vectorised numpy walk. Raises
        :class:`ModelFormatError` without ``internal_value``."""
        if self._node_values is None:
            raise ModelFormatError("the model text has no internal_value lines; contributions need them")
        x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, self.n_columns)
        n = x.shape[0]
        out = np.zeros((n, self.n_columns))
        if n == 0:
            return out
        lib = self._contrib_lib()
        if lib is not None:
            values = np.ascontiguousarray(self._node_values, dtype=np.float64)
            threads = max(1, min(threads, n // _MIN_ROWS_PER_THREAD))
            bounds = np.linspace(0, n, threads + 1).astype(np.int64)

            def run(i: int) -> None:
                a, b = int(bounds[i]), int(bounds[i + 1])
                work = np.empty(self.n_columns)
                lib.pf_contrib(
                    self._set_ptr, values.ctypes.data, x[a:b].ctypes.data, b - a, model, out[a:b].ctypes.data,
                    work.ctypes.data,
                )  # fmt: skip

            if threads == 1:
                run(0)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(run, range(threads)))
            return out * float(self._scale[model])
        a = self._numpy_arrays()
        flat = out.reshape(-1)
        trees = np.flatnonzero(self._tree_model == model)
        xc = np.where(np.abs(x) <= ZERO_THRESHOLD, 0.0, x)
        # Every (row, tree) walk as flat arrays; a walk that stops moving has reached its leaf and is dropped.
        row = np.repeat(np.arange(n, dtype=np.int64), trees.size)
        cur = np.tile(self._roots[trees].astype(np.int64), n)
        values = self._node_values
        while row.size:
            nxt = self._numpy_step(a, xc, row, cur)
            moved = nxt != cur
            row, src, dst = row[moved], cur[moved], nxt[moved]
            flat += np.bincount(
                row * self.n_columns + a["feat"][src], weights=values[dst] - values[src], minlength=flat.size
            )
            cur = dst
        return out * float(self._scale[model])

    def contributions_one(self, row: Sequence[float] | np.ndarray) -> np.ndarray:
        """Per-feature contributions to each model's raw score for one row: ``models × (n_columns + 1)``.

        Path attributions (Saabas): along each tree's path, the change in the node output at a split is credited
        to the split's feature; the last column is the bias (the trees' root outputs). Each row sums to the raw
        score (up to the precision of the ``internal_value`` the text model stores). Cheaper than SHAP and
        exact in sum, but not SHAP: a feature's credit depends on where in the tree it is used. Raises
        :class:`ModelFormatError` for models saved without ``internal_value``.
        """
        if self._node_values is None:
            raise ModelFormatError("the model text has no internal_value lines; contributions need them")
        a = self._numpy_arrays()
        x = np.asarray(row, dtype=np.float64).reshape(1, -1)
        if x.shape[1] != self.n_columns:
            raise ValueError(f"expected {self.n_columns} values, got {x.shape[1]}")
        xc = np.where(np.abs(x) <= ZERO_THRESHOLD, 0.0, x)
        rows = np.zeros((1, 1), dtype=np.int64)
        values = self._node_values
        out = np.zeros((self.n_models, self.n_columns + 1))
        cur = self._roots.astype(np.int64).reshape(1, -1)
        np.add.at(out, (self._tree_model, np.full_like(self._tree_model, self.n_columns)), values[cur[0]])
        for _ in range(self._max_depth):
            nxt = self._numpy_step(a, xc, rows, cur)
            moved = (nxt != cur)[0]
            if moved.any():
                src, dst = cur[0][moved], nxt[0][moved]
                np.add.at(out, (self._tree_model[moved], a["feat"][src]), values[dst] - values[src])
            cur = nxt
        return out * self._scale[:, None]


# ------------------------------------------------------------------------------------ linear and blended models
@dataclass(frozen=True)
class ModelSpec:
    """One action's model as a bundle stores it: ``lightgbm`` (``tree_text``), ``linear`` (``linear``, the
    bundle's ``linear.json``) or ``blend`` (both, combined as ``weights["linear"] · linear +
    weights["lightgbm"] · trees`` in log-odds)."""

    kind: str
    tree_text: str | None = None
    linear: dict[str, Any] | None = None
    weights: dict[str, float] | None = None


class ModelSet:
    """Every action's model over one input vector, whatever its kind, with :class:`CompiledScorer`'s interface.

    LightGBM parts are packed into one :class:`CompiledScorer`; linear parts (and the linear half of a blend)
    are evaluated with the training code's own arithmetic (:func:`propensity.training.linear.additive_raw`,
    terms added in a fixed order), so scores agree exactly with training-time predictions, for a batch or
    for one row (:func:`~propensity.training.linear.additive_raw_one`, checked by the tests). A linear model's
    contributions are its terms minus their training means.
    """

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        columns: Sequence[Sequence[int]] | None = None,
        *,
        n_columns: int | None = None,
        backend: Literal["auto", "native", "numpy"] = "auto",
        cache_dir: Path | str | None = None,
    ) -> None:
        from propensity.training.linear import AdditiveLogistic

        if not specs:
            raise ValueError("ModelSet needs at least one model")
        parsed = [parse_model(s.tree_text) if s.tree_text else None for s in specs]
        if columns is None:
            columns = []
            for s, p in zip(specs, parsed, strict=True):
                n = (
                    p.num_features
                    if p is not None
                    else 1 + max((int(t["feature"]) for t in (s.linear or {}).get("terms", [])), default=-1)
                )
                columns.append(list(range(n)))
        width = (
            n_columns if n_columns is not None else max((max(c, default=-1) + 1 for c in columns), default=0)
        )
        self.n_columns = width
        self.n_models = len(specs)
        self.kinds = [s.kind for s in specs]
        trees = [(m, p) for m, p in enumerate(parsed) if p is not None and _uses_trees(specs[m])]
        self._tree_index = {m: i for i, (m, _) in enumerate(trees)}
        self.trees: CompiledScorer | None = (
            CompiledScorer(
                [p for _, p in trees],
                [columns[m] for m, _ in trees],
                n_columns=width,
                backend=backend,
                cache_dir=cache_dir,
            )
            if trees
            else None
        )
        self._linear: dict[int, AdditiveLogistic] = {}
        for m, s in enumerate(specs):
            if s.kind in ("linear", "blend"):
                if s.linear is None:
                    raise ModelFormatError(f"model {m} is {s.kind} but has no linear part")
                lin = AdditiveLogistic.from_json(s.linear)
                cols = columns[m]
                for t in lin.terms:
                    if t.feature >= len(cols):
                        raise ValueError(
                            f"model {m}'s linear term {t.name!r} maps outside its {len(cols)} features"
                        )
                    t.feature = int(cols[t.feature])
                self._linear[m] = lin
            if s.kind == "blend" and (s.weights is None or m not in self._tree_index):
                raise ModelFormatError(f"model {m} is a blend without weights or trees")
            if s.kind not in ("linear", "lightgbm", "blend"):
                raise ModelFormatError(
                    f"model {m} has an unknown kind {s.kind!r} (linear, lightgbm or blend)"
                )
        self._weights = [s.weights for s in specs]
        self.backend: Literal["native", "numpy"] = self.trees.backend if self.trees is not None else "numpy"

    def exp(self, x: np.ndarray) -> np.ndarray:
        """``exp`` of every value as :func:`math.exp` computes it (see :meth:`CompiledScorer.exp`): the tree
        scorer's when the set has trees, else the C library's through Python."""
        if self.trees is not None:
            return self.trees.exp(x)
        x = np.ascontiguousarray(x, dtype=np.float64)
        out = np.empty_like(x)
        if x.size:
            out.reshape(-1)[:] = np.fromiter(map(_exp, x.reshape(-1).tolist()), np.float64, x.size)
        return out

    def __getattr__(self, name: str) -> Any:
        # Tree-scorer details (e.g. ``_depth`` for benchmarks) of an all-LightGBM set.
        trees = self.__dict__.get("trees")
        if trees is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(trees, name)

    def raw(self, x: np.ndarray, *, threads: int = 1) -> np.ndarray:
        """Raw scores (log-odds), ``rows × models``."""
        from propensity.training.linear import additive_raw

        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.n_columns:
            raise ValueError(f"expected a matrix with {self.n_columns} columns, got shape {x.shape}")
        tree_raw = self.trees.raw(x, threads=threads) if self.trees is not None else None
        out = np.empty((x.shape[0], self.n_models), dtype=np.float64)
        for m, kind in enumerate(self.kinds):
            if kind == "lightgbm":
                assert tree_raw is not None
                out[:, m] = tree_raw[:, self._tree_index[m]]
                continue
            lin = self._linear[m]
            z = additive_raw(x, lin.intercept, lin.terms)
            if kind == "blend":
                assert tree_raw is not None
                w = self._weights[m]
                assert w is not None
                z = w["linear"] * z + w["lightgbm"] * tree_raw[:, self._tree_index[m]]
            out[:, m] = z
        return out

    def predict(self, x: np.ndarray, *, threads: int = 1) -> np.ndarray:
        z = self.raw(x, threads=threads)
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-z))

    def raw_one(self, row: Sequence[float] | np.ndarray) -> list[float]:
        """Raw scores of every model for one input vector (the serving path)."""
        from propensity.training.linear import additive_raw_one

        if len(row) != self.n_columns:
            raise ValueError(f"expected {self.n_columns} values, got {len(row)}")
        tree_raw = self.trees.raw_one(row) if self.trees is not None else []
        out = []
        for m, kind in enumerate(self.kinds):
            if kind == "lightgbm":
                out.append(tree_raw[self._tree_index[m]])
                continue
            lin = self._linear[m]
            z = additive_raw_one(row, lin.intercept, lin.terms)
            if kind == "blend":
                w = self._weights[m]
                assert w is not None
                z = w["linear"] * z + w["lightgbm"] * tree_raw[self._tree_index[m]]
            out.append(z)
        return out

    def predict_one(self, row: Sequence[float] | np.ndarray) -> list[float]:
        return [_sigmoid(r) for r in self.raw_one(row)]

    def _linear_contrib(self, m: int, x: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], self.n_columns))
        for t in self._linear[m].terms:
            out[:, t.feature] += t.evaluate(x[:, t.feature]) - t.center
        return out

    def contributions(self, x: np.ndarray, model: int, *, threads: int = 1) -> np.ndarray:
        """Per-feature contributions of model ``model`` for many rows, ``rows × n_columns`` (log-odds);
        ``threads`` for the trees' part (see :meth:`CompiledScorer.contributions`)."""
        x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, self.n_columns)
        kind = self.kinds[model]
        if kind == "lightgbm":
            assert self.trees is not None
            return self.trees.contributions(x, self._tree_index[model], threads=threads)
        lin = self._linear_contrib(model, x)
        if kind == "linear":
            return lin
        assert self.trees is not None
        w = self._weights[model]
        assert w is not None
        trees = self.trees.contributions(x, self._tree_index[model], threads=threads)
        return w["linear"] * lin + w["lightgbm"] * trees

    def contributions_one(self, row: Sequence[float] | np.ndarray) -> np.ndarray:
        """Per-feature contributions of every model for one row, ``models × (n_columns + 1)`` (last: bias)."""
        x = np.asarray(row, dtype=np.float64).reshape(1, -1)
        if x.shape[1] != self.n_columns:
            raise ValueError(f"expected {self.n_columns} values, got {x.shape[1]}")
        tree = self.trees.contributions_one(x[0]) if self.trees is not None else None
        out = np.zeros((self.n_models, self.n_columns + 1))
        for m, kind in enumerate(self.kinds):
            if kind == "lightgbm":
                assert tree is not None
                out[m] = tree[self._tree_index[m]]
                continue
            lin = self._linear[m]
            part = np.zeros(self.n_columns + 1)
            part[: self.n_columns] = self._linear_contrib(m, x)[0]
            part[self.n_columns] = lin.intercept + sum(t.center for t in lin.terms)
            if kind == "blend":
                assert tree is not None
                w = self._weights[m]
                assert w is not None
                part = w["linear"] * part + w["lightgbm"] * tree[self._tree_index[m]]
            out[m] = part
        return out


def _uses_trees(spec: ModelSpec) -> bool:
    return spec.kind in ("lightgbm", "blend")
