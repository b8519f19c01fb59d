"""The native tree evaluator: a small C function compiled once per machine, loaded with ctypes.

The C code is generic: it walks flat node arrays that any LightGBM model is packed into (see
:mod:`propensity.scoring.compiled`), so nothing is compiled per model and nothing is compiled on a request path.
The shared library is cached under ``$PROPENSITY_CACHE_DIR`` (default ``~/.cache/propensity``) in
``scorer/<hash>.so``, where the hash covers the C source, the compiler command and the platform; compiling takes
about a second the first time. Measured choices: 8 trees walked in lockstep (independent dependency chains the
CPU overlaps; 16 was no faster, 4 slower), rare node kinds off the hot step (1.4× faster), ``-O2`` on purpose
(``-O3`` measured 2.5× slower on such code). No fast-math: NaN tests must stay exact. When no C compiler is found (or compiling fails) :func:`load_native` returns ``None`` and the
caller falls back to the numpy evaluator with a warning.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

C_SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* One node (24 bytes). child[0] is the left child, child[1] the right. Leaves are nodes too: both children point
   at the leaf itself and `thr` holds the leaf value, so a walk of a fixed number of steps (the tree's depth) ends
   on the leaf whatever the path; that lets several trees be walked in lockstep without branches on "done".
   flags: LightGBM's decision_type bits (1 categorical, 2 default left, (flags >> 2) & 3 the missing type:
   0 none, 1 zero, 2 NaN), bit 4 "NaN goes left" (precomputed when packing: the default side for the NaN missing
   type, `0 <= thr` otherwise, since LightGBM then reads NaN as 0), bit 5 leaf, bit 6 "slow" (categorical or
   zero-as-missing: rare, handled by pf_slow so the hot step stays a compare, a NaN test and a select) and, for a
   categorical split, the bitset length in 32-bit words in flags >> 8 and its offset in `thr`. */
typedef struct { double thr; int32_t feat; int32_t child[2]; int32_t flags; } pf_node;

typedef struct {
    const pf_node *nodes;        /* node 0 is a leaf of value 0 (pads a lockstep group) */
    const uint32_t *bits;
    const int32_t *roots;        /* per tree: its root node */
    const int32_t *depth;        /* per tree: the longest root-to-leaf path */
    const int32_t *model_start;  /* per model: its first tree; n_models + 1 entries */
    int64_t n_models;
    int64_t n_cols;              /* the row stride of the input */
} pf_set;

/* LightGBM's kZeroThreshold (1e-35f as a double): smaller magnitudes are read as 0. */
#define PF_ZERO 1.0000000180025095e-35
#define PF_LANES 8   /* trees walked in lockstep: independent chains the CPU overlaps */
#define PF_BLOCK 32  /* rows per block in batch mode (a tree group's nodes stay in cache across them) */
#define PF_SLOW 64   /* flags bit: categorical or zero-as-missing, handled off the hot path by pf_slow */

static int32_t pf_categorical(const pf_node *nd, const uint32_t *bits, double v) {
    /* static_cast<int>: truncation; negative, NaN and out-of-range values go right */
    if (!(v > -1.0) || v >= 2147483648.0) return nd->child[1];
    int32_t iv = (int32_t)v;
    int32_t word = iv >> 5;
    if (word >= (nd->flags >> 8)) return nd->child[1];
    return nd->child[((bits[(int64_t)nd->thr + word] >> (iv & 31)) & 1u) ^ 1u];
}

/* The rare kinds of node (categorical, zero-as-missing), off the hot path. */
static int32_t pf_slow(const pf_node *nd, const uint32_t *bits, double v) {
    int32_t fl = nd->flags;
    if (fl & 1) return pf_categorical(nd, bits, v);
    int32_t isn = v != v;
    if (isn | (v == 0.0)) return nd->child[((fl >> 1) & 1) ^ 1];  /* zero-as-missing: NaN reads as 0 too */
    return nd->child[v <= nd->thr ? 0 : 1];
}

/* x has already had |x| <= kZeroThreshold replaced by 0 (see pf_prepare). */
static inline int32_t pf_next(const pf_node *nd, const uint32_t *bits, const double *x) {
    double v = x[nd->feat];
    int32_t fl = nd->flags;
    if (__builtin_expect(fl & PF_SLOW, 0)) return pf_slow(nd, bits, v);
    int32_t left = (v <= nd->thr) | ((v != v) & (fl >> 4));
    return nd->child[left ^ 1];
}

static inline void pf_prepare(const double *x, double *xz, int64_t n) {
    for (int64_t j = 0; j < n; j++) xz[j] = fabs(x[j]) <= PF_ZERO ? 0.0 : x[j];
}

/* Adds trees [t0, t1) (at most PF_LANES) of one row to *acc, in tree order. */
static inline void pf_group(const pf_set *s, int32_t t0, int32_t t1, const double *xr, double *acc) {
    int32_t idx[PF_LANES];
    int32_t steps = 0;
    for (int32_t j = 0; j < PF_LANES; j++) {
        int32_t t = t0 + j;
        idx[j] = t < t1 ? s->roots[t] : 0;
        if (t < t1 && s->depth[t] > steps) steps = s->depth[t];
    }
    for (int32_t k = 0; k < steps; k++)
        for (int32_t j = 0; j < PF_LANES; j++) idx[j] = pf_next(s->nodes + idx[j], s->bits, xr);
    double a = *acc;
    for (int32_t j = 0; j < PF_LANES && t0 + j < t1; j++) a += s->nodes[idx[j]].thr;
    *acc = a;
}

/* out[r * n_models + m] = raw score of model m on row r (trees summed in order, as LightGBM does).
   work: PF_BLOCK * n_cols doubles of scratch. */
void pf_eval(const pf_set *s, const double *x, int64_t n_rows, double *out, double *work) {
    double acc[PF_BLOCK];
    for (int64_t r0 = 0; r0 < n_rows; r0 += PF_BLOCK) {
        int64_t nb = n_rows - r0 < PF_BLOCK ? n_rows - r0 : PF_BLOCK;
        for (int64_t r = 0; r < nb; r++) pf_prepare(x + (r0 + r) * s->n_cols, work + r * s->n_cols, s->n_cols);
        for (int64_t m = 0; m < s->n_models; m++) {
            int32_t end = s->model_start[m + 1];
            for (int64_t r = 0; r < nb; r++) acc[r] = 0.0;
            for (int32_t t = s->model_start[m]; t < end; t += PF_LANES) {
                int32_t t1 = t + PF_LANES < end ? t + PF_LANES : end;
                for (int64_t r = 0; r < nb; r++) pf_group(s, t, t1, work + r * s->n_cols, &acc[r]);
            }
            for (int64_t r = 0; r < nb; r++) out[(r0 + r) * s->n_models + m] = acc[r];
        }
    }
}

/* Path attributions (Saabas) of model m: out[r * n_cols + feat] += values[child] - values[node] along each
   tree's path; out must be zeroed by the caller. values: each packed node's output (internal_value, or the leaf
   value). work: n_cols doubles of scratch. A leaf's children point at itself, which ends a walk. */
void pf_contrib(const pf_set *s, const double *values, const double *x, int64_t n_rows, int64_t m, double *out,
                double *work) {
    int32_t t0 = s->model_start[m], t1 = s->model_start[m + 1];
    for (int64_t r = 0; r < n_rows; r++) {
        pf_prepare(x + r * s->n_cols, work, s->n_cols);
        double *o = out + r * s->n_cols;
        for (int32_t t = t0; t < t1; t++) {
            int32_t cur = s->roots[t];
            for (int32_t k = 0; k < s->depth[t]; k++) {
                int32_t nxt = pf_next(s->nodes + cur, s->bits, work);
                if (nxt == cur) break;
                o[s->nodes[cur].feat] += values[nxt] - values[cur];
                cur = nxt;
            }
        }
    }
}
"""

CFLAGS = ("-O2", "-shared", "-fPIC", "-std=c99")

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}


def cache_dir() -> Path:
    root = os.environ.get("PROPENSITY_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "propensity"
    )
    return Path(root) / "scorer"


def _compiler() -> str | None:
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return cand
    return None


def _compile(cc: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pf-build-") as tmp:
        src = Path(tmp) / "pf_eval.c"
        src.write_text(C_SOURCE)
        out = Path(tmp) / "pf_eval.so"
        proc = subprocess.run(
            [cc, *CFLAGS, "-o", str(out), str(src), "-lm"], capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed: {proc.stderr.strip()[-2000:]}")
        # Atomic publish: a concurrent process either sees no file or a complete one.
        staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(out, staged)
        os.replace(staged, target)


def load_native() -> ctypes.CDLL | None:
    """The compiled evaluator (compiled and cached on first use), or ``None`` with a warning when impossible."""
    if os.environ.get("PROPENSITY_SCORER") == "numpy":
        return None
    cc = _compiler()
    if cc is None:
        log.warning("no C compiler found (set CC); the scorer falls back to the slower numpy evaluator")
        return None
    key = hashlib.sha256("\0".join([C_SOURCE, cc, *CFLAGS, platform.machine(), platform.system()]).encode())
    target = cache_dir() / f"pf-{key.hexdigest()[:20]}.so"
    with _lock:
        if str(target) in _loaded:
            return _loaded[str(target)]
        lib: ctypes.CDLL | None = None
        try:
            if not target.exists():
                _compile(cc, target)
            lib = ctypes.CDLL(str(target))
            lib.pf_eval.argtypes = [
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_int64,
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
            lib.pf_eval.restype = None
            lib.pf_contrib.argtypes = [
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_int64,
                ctypes.c_int64,
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
            lib.pf_contrib.restype = None
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            log.warning("could not build the native scorer (%s); falling back to the numpy evaluator", exc)
            lib = None
        _loaded[str(target)] = lib
        return lib
