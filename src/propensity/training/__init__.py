"""Training: training sets, time splits, trainers, calibration, evaluation, explanations and reports.

LightGBM's OpenMP threads spin while they wait by default, which on a small, shared machine (2 cores running
a DuckDB query or a test suite beside the training) made training several times slower than one thread. Passive
waiting keeps the parallel speed-up without the contention; it is set before any OpenMP runtime loads, and an
explicit ``OMP_WAIT_POLICY`` in the environment wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
