"""The method as one pipeline: data → sample → score → pairs → train → eval.

This package is the machinery: ``context`` (RunContext, RunOptions, Reporter, StageRun),
``stage`` (the Stage base class), ``runner`` (Pipeline), ``checks`` (the checks several stages
share: items, metric sizes, disk), ``guard`` (refusing to discard finished work), ``tuned``
(the tuned model's spec), ``rounds`` (iterative on-policy rounds, each a run of its own in
``RUN/rounds/<r>/``). Each stage is one module of :mod:`dp2o_core.stages` holding its Stage
class and its work together (``stages/data.py``: DataStage and the data stage's writer; …).

Each stage is a :class:`Stage` object: its name (its upstream stages come from the run
store's :data:`~dp2o_core.store.runstore.STAGES`), the components it needs, a
:meth:`Stage.config` that yields the configuration its fingerprint is made from, and
:meth:`Stage.run`. A :class:`Pipeline` runs a selection of stages in order against one
:class:`RunContext`: it resolves every component the stages need before any of them works
(a misspelt option fails in a second, not after sampling), checks that everything the stages
that will work need is there (:mod:`dp2o_core.preflight`: weights, packages, data, disk) and
reports every problem at once before anything is written, computes each stage's
fingerprint once, skips what is current, continues what is partial, redoes what is stale,
times the work and waits for every process between stages.

Every CLI command that runs stages is a thin wrapper around this package: ``dp2o train``
runs the whole pipeline, ``dp2o sample`` the data and sample stages, and so on, so the
commands cannot drift apart. Library users drive it the same way::

    ctx = RunContext(RunStore(run), config, PluginManager(), ProcessInfo.detect())
    Pipeline.method().select("data", "sample").run(ctx)
"""

from typing import Any

from dp2o_core.pipeline.checks import candidates_bytes, items_check
from dp2o_core.pipeline.context import ProgressCallbacks, Reporter, RunContext, RunOptions, StageRun
from dp2o_core.pipeline.rounds import next_round, round_dir, round_evaluations, round_numbers, run_rounds
from dp2o_core.pipeline.runner import Pipeline, describe_status
from dp2o_core.pipeline.stage import Stage
from dp2o_core.pipeline.tuned import configured_spec, tuned_spec

__all__ = [
    "DataStage",
    "EvalStage",
    "PairsStage",
    "Pipeline",
    "ProgressCallbacks",
    "Reporter",
    "RunContext",
    "RunOptions",
    "SampleStage",
    "ScoreStage",
    "Stage",
    "StageRun",
    "TrainStage",
    "candidates_bytes",
    "configured_spec",
    "describe_status",
    "items_check",
    "next_round",
    "round_dir",
    "round_evaluations",
    "round_numbers",
    "run_rounds",
    "tuned_spec",
]

#: Stage classes, exported here and imported on first use (their modules load numpy and more).
_STAGE_MODULES = {
    "DataStage": "data",
    "SampleStage": "sample",
    "ScoreStage": "score",
    "PairsStage": "pairs",
    "TrainStage": "train",
    "EvalStage": "eval",
}


def __getattr__(name: str) -> Any:
    if name in _STAGE_MODULES:
        import importlib

        return getattr(importlib.import_module(f"dp2o_core.stages.{_STAGE_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
