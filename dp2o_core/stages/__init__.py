"""The pipeline stages, each reading the run store and writing its own part of it.

Each module is one stage: its :class:`~dp2o_core.pipeline.stage.Stage` class (what it needs,
what its fingerprint is made of, how it reports) and its work (what it writes, from what)
together. :mod:`dp2o_core.pipeline` is the machinery that composes them into the method's
pipeline (``Pipeline.method()``).
"""
