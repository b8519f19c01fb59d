"""Training: training sets, time splits, trainers, calibration, evaluation, explanations and reports."""
