"""The run store: the run directory every stage reads from and writes into.

Layout and table schemas: docs/formats.md. Entry point: :class:`RunStore`.
"""

from dp2o_core.store.runstore import STAGES, RunStore, StageStatus, StageWriter
from dp2o_core.store.sharding import ProcessInfo

__all__ = ["STAGES", "ProcessInfo", "RunStore", "StageStatus", "StageWriter"]
