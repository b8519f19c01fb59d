"""Labels: actions (what is predicted, for whom, over which horizon), eligibility, labels and spines."""
