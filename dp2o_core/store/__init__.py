"""The run store: the run directory every stage reads from and writes into.

Layout and table schemas: docs/formats.md. Entry point: :class:`RunStore`.
"""

from dp2o_core.store.runstore import STAGES, DamagedStageError, RunStore, StageStatus, StageWriter
from dp2o_core.store.sharding import ProcessInfo

__all__ = ["STAGES", "DamagedStageError", "ProcessInfo", "RunStore", "StageStatus", "StageWriter"]
