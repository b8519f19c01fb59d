"""Scoring: the compiled scorer, a bundle loaded for scoring (:mod:`model`), batch scoring, the rule-based
fallback scorer, segments, the decision policy, and the score stores.

Segments (:mod:`segments`) and the decision policy (:mod:`policy`) live here, not in activation, because batch
scoring writes them into every score row and the online service answers with segments too; activation reads
them from the rows (see docs/architecture.md).
"""
