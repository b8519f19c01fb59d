"""Native code for the scorer: finding a C compiler, building shared libraries, caching and loading them.

Two kinds of library are built here, both with the system C compiler and loaded with ctypes:

* **per model** (:func:`load_program`): the code :mod:`propensity.scoring._codegen` generates for one bundle's
  models, built once per bundle (at promotion or first load, never per request) and cached beside the bundle
  (``<bundle>/compiled/``), or in the user cache when the bundle folder is read-only;
* **generic** (:func:`load_native`): a small walker of flat node arrays, compiled once per machine, used for the
  path attributions behind reason codes (:meth:`CompiledScorer.contributions`).

The user cache is ``$PROPENSITY_CACHE_DIR`` (default ``~/.cache/propensity``)``/scorer``. A library's file name is
a hash of its source, the compiler command and the platform, so a changed model, compiler or machine never loads a
stale one; a library is published with an atomic rename, so concurrent processes see none or a whole one.
``-O2`` on purpose (``-O3`` measured 2.5x slower on such code); no fast-math (NaN tests must stay exact). When no C
compiler is found (``$CC``, ``cc``, ``gcc``, ``clang``) or compiling fails, the loaders return ``None`` with a
warning and the caller falls back to the numpy evaluator.
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
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

C_SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* One node (24 bytes). child[0] is the left child, child[1] the right. Leaves are nodes too: both children point
   at the leaf itself and `thr` holds the leaf value, so a walk stops when the next node is the current one.
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


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on the PATH; None when there is none."""
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return cand
    return None


def library_name(source: str) -> str:
    """The cache file name of ``source`` built here: a hash of the source, the flags and the platform (not the
    compiler: a library built elsewhere on the same platform loads where no compiler is installed)."""
    key = hashlib.sha256("\0".join([source, *CFLAGS, platform.machine(), platform.system()]).encode())
    return f"pf-{key.hexdigest()[:24]}.so"


def build(cc: str, source: str, target: Path) -> None:
    """Compile ``source`` into the shared library ``target``, published atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pf-build-") as tmp:
        src = Path(tmp) / "pf.c"
        src.write_text(source)
        out = Path(tmp) / "pf.so"
        proc = subprocess.run(
            [cc, *CFLAGS, "-o", str(out), str(src), "-lm"], capture_output=True, text=True, timeout=900
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed: {proc.stderr.strip()[-2000:]}")
        staged = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        shutil.copyfile(out, staged)
        os.replace(staged, target)


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def load_program(source: str, folders: Sequence[Path]) -> ctypes.CDLL | None:
    """The library built from generated ``source``: found in one of ``folders`` or the user cache, else built
    into the first writable one. None, with a warning, when it is not there and cannot be built (no compiler)."""
    if os.environ.get("PROPENSITY_SCORER") == "numpy":
        return None
    name = library_name(source)
    candidates = [*folders, cache_dir()]
    with _lock:
        for folder in candidates:
            if str(folder / name) in _loaded:
                return _loaded[str(folder / name)]
        found = next((f / name for f in candidates if (f / name).exists()), None)
        try:
            if found is None:
                cc = compiler()
                if cc is None:
                    log.warning(
                        "no C compiler found (set CC) and the models are not compiled yet; the scorer falls back "
                        "to the slower numpy evaluator"
                    )
                    return None
                writable = next((f for f in candidates if _writable(f)), None)
                if writable is None:
                    raise RuntimeError("no writable folder for the compiled scorer (bundle folder, cache)")
                found = writable / name
                started = time.perf_counter()
                build(cc, source, found)
                log.info("compiled the scorer into %s in %.1f s", found, time.perf_counter() - started)
            lib = ctypes.CDLL(str(found))
            lib.pf_rows.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] + [ctypes.c_void_p] * 2
            lib.pf_rows.restype = None
            lib.pf_row.restype = None  # no argtypes: called with ctypes arrays only (the cheapest call)
            lib.pf_exp.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
            lib.pf_exp.restype = None
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            log.warning("could not build the compiled scorer (%s); falling back to the numpy evaluator", exc)
            return None
        _loaded[str(found)] = lib
        return lib


def load_native() -> ctypes.CDLL | None:
    """The generic walker (compiled and cached on first use), or ``None`` with a warning when impossible."""
    if os.environ.get("PROPENSITY_SCORER") == "numpy":
        return None
    target = cache_dir() / library_name(C_SOURCE)
    with _lock:
        if str(target) in _loaded:
            return _loaded[str(target)]
        lib: ctypes.CDLL | None = None
        try:
            if not target.exists():
                cc = compiler()
                if cc is None:
                    log.warning("no C compiler found (set CC); attributions fall back to the numpy evaluator")
                    return None
                build(cc, C_SOURCE, target)
            lib = ctypes.CDLL(str(target))
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
