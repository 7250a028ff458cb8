"""The pipeline stages, each reading the run store and writing its own part of it.

Each module holds one stage's work (what it writes, from what); :mod:`dp2o_core.pipeline`
composes them into the method's pipeline.
"""
