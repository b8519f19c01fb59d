"""Online serving: the online feature store, live ingest and the scoring service (the loaded
bundle it scores with is :mod:`propensity.scoring.model`).

The HTTP layer (:mod:`propensity.server`) only routes requests here; everything it does is callable and tested
without a server.
"""
