"""The shared plain types at the bottom of the package, importing nothing else from propensity.

The canonical event (:mod:`event`), the score row and its versioned contract (:mod:`score_row`,
:mod:`contract`), statistics (:mod:`stats`: PSI, KS), hashing (:mod:`hashing`), holdout assignment
(:mod:`holdout`), the data's clock (:mod:`clock`: what 'now' is, staleness, label maturity), the shared pieces of the HTML reports (:mod:`html`) and the base error
(:mod:`errors`). Every stage package may import from here; see docs/architecture.md.
"""
