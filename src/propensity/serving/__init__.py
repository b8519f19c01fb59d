"""Online serving: the online feature store, the compiled serving model, live ingest and the scoring service.

The HTTP layer (:mod:`propensity.server`) only routes requests here; everything it does is callable and tested
without a server.
"""
