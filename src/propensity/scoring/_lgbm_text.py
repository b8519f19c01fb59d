"""A parser for LightGBM's text model format (``Booster.model_to_string()``), into plain numpy arrays.

Only what prediction needs is read: the header (objective, feature count and names, trees per iteration,
averaging) and, per tree, ``split_feature``, ``threshold``, ``decision_type``, ``left_child``/``right_child``,
``leaf_value`` and, for categorical splits, ``cat_boundaries``/``cat_threshold``. Children follow LightGBM's
convention: ``>= 0`` is an internal node, ``< 0`` is the leaf ``~child``.

``decision_type`` bits (LightGBM ``tree.h``): 1 categorical, 2 default-left, bits 2–3 the missing type
(0 none, 1 zero, 2 NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from propensity.core.errors import PropensityError

CATEGORICAL_MASK = 1
DEFAULT_LEFT_MASK = 2


class ModelFormatError(PropensityError):
    """A LightGBM text model that cannot be read or is of a kind the compiled scorer does not evaluate."""


@dataclass(frozen=True)
class ParsedTree:
    split_feature: np.ndarray  # int32, one per internal node
    threshold: np.ndarray  # float64 (for categorical splits: index into cat_boundaries)
    decision_type: np.ndarray  # int32
    left_child: np.ndarray  # int32
    right_child: np.ndarray  # int32
    leaf_value: np.ndarray  # float64, one per leaf
    cat_boundaries: np.ndarray  # int32, num_cat + 1 (empty when num_cat = 0)
    cat_threshold: np.ndarray  # uint32 bitset words
    internal_value: np.ndarray | None = (
        None  # float64 per internal node (the node's output as a leaf), if given
    )

    @property
    def num_leaves(self) -> int:
        return len(self.leaf_value)

    def depth(self) -> int:
        """The longest root-to-leaf path, in decisions."""
        if self.num_leaves <= 1:
            return 0
        best, stack = 0, [(0, 1)]
        while stack:
            node, d = stack.pop()
            best = max(best, d)
            for child in (int(self.left_child[node]), int(self.right_child[node])):
                if child >= 0:
                    stack.append((child, d + 1))
        return best


@dataclass(frozen=True)
class ParsedModel:
    num_features: int
    feature_names: list[str]
    objective: str
    sigmoid: float  # the scale of the binary objective's sigmoid (1.0 unless trained otherwise)
    num_tree_per_iteration: int
    average_output: bool
    trees: list[ParsedTree]


def _kv(line: str) -> tuple[str, str]:
    key, _, value = line.partition("=")
    return key.strip(), value.strip()


def _ints(text: str, what: str) -> np.ndarray:
    try:
        return np.array([int(t) for t in text.split()], dtype=np.int64)
    except ValueError:
        raise ModelFormatError(f"LightGBM model: {what} holds a value that is not an integer") from None


def _floats(text: str, what: str) -> np.ndarray:
    try:
        return np.array([float(t) for t in text.split()], dtype=np.float64)
    except ValueError:
        raise ModelFormatError(f"LightGBM model: {what} holds a value that is not a number") from None


def _tree(index: int, fields: dict[str, str]) -> ParsedTree:
    where = f"Tree={index}"
    try:
        num_leaves = int(fields["num_leaves"])
        num_cat = int(fields.get("num_cat", "0"))
        leaf_value = _floats(fields["leaf_value"], f"{where} leaf_value")
    except (KeyError, ValueError):
        raise ModelFormatError(f"LightGBM model: {where} lacks num_leaves or leaf_value") from None
    if fields.get("is_linear", "0") not in ("0", ""):
        raise ModelFormatError(
            f"LightGBM model: {where} is a linear tree (linear_tree=true), which the compiled scorer does not "
            "evaluate; train without linear_tree"
        )
    if len(leaf_value) != num_leaves:
        raise ModelFormatError(
            f"LightGBM model: {where} has {len(leaf_value)} leaf values for {num_leaves} leaves"
        )
    n = num_leaves - 1
    empty_i = np.zeros(0, dtype=np.int32)
    if n == 0:
        return ParsedTree(
            empty_i, np.zeros(0), empty_i, empty_i, empty_i, leaf_value, empty_i, np.zeros(0, np.uint32)
        )
    try:
        arrays = {
            "split_feature": _ints(fields["split_feature"], f"{where} split_feature"),
            "threshold": _floats(fields["threshold"], f"{where} threshold"),
            "decision_type": _ints(fields["decision_type"], f"{where} decision_type"),
            "left_child": _ints(fields["left_child"], f"{where} left_child"),
            "right_child": _ints(fields["right_child"], f"{where} right_child"),
        }
    except KeyError as exc:
        raise ModelFormatError(f"LightGBM model: {where} lacks {exc.args[0]}") from None
    for name, arr in arrays.items():
        if len(arr) != n:
            raise ModelFormatError(f"LightGBM model: {where} {name} has {len(arr)} values, expected {n}")
    for name in ("left_child", "right_child"):
        c = arrays[name]
        if ((c >= n) | (c < -num_leaves)).any():
            raise ModelFormatError(f"LightGBM model: {where} {name} points outside the tree")
    if num_cat > 0:
        cat_boundaries = _ints(fields.get("cat_boundaries", ""), f"{where} cat_boundaries")
        cat_threshold = _ints(fields.get("cat_threshold", ""), f"{where} cat_threshold")
        if len(cat_boundaries) != num_cat + 1 or cat_boundaries[-1] != len(cat_threshold):
            raise ModelFormatError(f"LightGBM model: {where} cat_boundaries do not match cat_threshold")
    else:
        cat_boundaries, cat_threshold = np.zeros(0, np.int64), np.zeros(0, np.int64)
    cat = (arrays["decision_type"] & CATEGORICAL_MASK) != 0
    if cat.any():
        idx = arrays["threshold"][cat]
        if num_cat == 0 or (idx < 0).any() or (idx >= num_cat).any() or (idx != np.floor(idx)).any():
            raise ModelFormatError(
                f"LightGBM model: {where} has a categorical split without its category set"
            )
    return ParsedTree(
        split_feature=arrays["split_feature"].astype(np.int32),
        threshold=arrays["threshold"],
        decision_type=arrays["decision_type"].astype(np.int32),
        left_child=arrays["left_child"].astype(np.int32),
        right_child=arrays["right_child"].astype(np.int32),
        leaf_value=leaf_value,
        cat_boundaries=cat_boundaries.astype(np.int32),
        cat_threshold=cat_threshold.astype(np.uint32),
        internal_value=_internal_values(fields.get("internal_value"), n),
    )


def _internal_values(text: str | None, n: int) -> np.ndarray | None:
    """Node outputs (used for per-feature contributions); ``None`` when absent or malformed (not needed to score)."""
    if not text:
        return None
    try:
        values = np.array([float(t) for t in text.split()], dtype=np.float64)
    except ValueError:
        return None
    return values if len(values) == n else None


def parse_model(text: str) -> ParsedModel:
    """Parse a LightGBM text model; raises :class:`ModelFormatError` with the reason when it cannot be used."""
    lines = text.splitlines()
    header: dict[str, str] = {}
    i = 0
    while i < len(lines) and not lines[i].startswith("Tree="):
        line = lines[i]
        if line.startswith("end of trees"):
            break
        if "=" in line:
            k, v = _kv(line)
            header[k] = v
        elif line.strip():
            header[line.strip()] = ""  # flags such as ``average_output``
        i += 1
    if "max_feature_idx" not in header:
        raise ModelFormatError("not a LightGBM text model: no max_feature_idx in its header")
    trees: list[ParsedTree] = []
    while i < len(lines) and lines[i].startswith("Tree="):
        index = int(_kv(lines[i])[1])
        if index != len(trees):
            raise ModelFormatError(f"LightGBM model: expected Tree={len(trees)}, found Tree={index}")
        fields: dict[str, str] = {}
        i += 1
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("Tree="):
            k, v = _kv(lines[i])
            fields[k] = v
            i += 1
        trees.append(_tree(index, fields))
        while i < len(lines) and not lines[i].strip():
            i += 1
    if i >= len(lines) or not lines[i].startswith("end of trees"):
        raise ModelFormatError("LightGBM model is truncated: no 'end of trees' line")
    num_features = int(header["max_feature_idx"]) + 1
    per_iter = int(header.get("num_tree_per_iteration", "1"))
    if int(header.get("num_class", "1")) != 1 or per_iter != 1:
        raise ModelFormatError(
            "LightGBM model is multi-class; the compiled scorer evaluates one output per model"
        )
    objective_parts = header.get("objective", "regression").split()
    objective = objective_parts[0] if objective_parts else "regression"
    sigmoid = 1.0
    for part in objective_parts[1:]:
        if part.startswith("sigmoid:"):
            sigmoid = float(part.split(":", 1)[1])
    for t in trees:
        if len(t.split_feature) and (t.split_feature.max() >= num_features or t.split_feature.min() < 0):
            raise ModelFormatError("LightGBM model: a split uses a feature beyond max_feature_idx")
    return ParsedModel(
        num_features=num_features,
        feature_names=header.get("feature_names", "").split(),
        objective=objective,
        sigmoid=sigmoid,
        num_tree_per_iteration=per_iter,
        average_output="average_output" in header,
        trees=trees,
    )
