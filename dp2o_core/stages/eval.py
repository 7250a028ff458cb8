"""The ``eval`` stage: the base and the tuned model on held-out data, after training.

Both models sample the same seeds for every held-out input (:mod:`dp2o_core.evaluation`);
the stage writes ``eval/held-out.json`` (the evaluation record) and, for every input,
``eval/images/<id>/{lr,hr,base,tuned}.png`` — the first candidate of each model — which the
run report shows as an image grid. Its fingerprint covers the held-out data, degradation,
reward, metrics, sample counts and seed and, through the store, the trained weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dp2o_core.atomic import write_text_atomic
from dp2o_core.evaluation import EvalInput, Evaluation, evaluate
from dp2o_core.imageio import tensor_to_array, write_png
from dp2o_core.interfaces import Backbone, RewardModel
from dp2o_core.store import RunStore

RESULT_FILE = "held-out.json"


def eval_stage_config(records: Mapping[str, Any], settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """What decides the evaluation besides the trained weights."""
    return {**records, "eval": dict(settings), "seed": seed}


def run_eval_stage(
    store: RunStore,
    models: Sequence[tuple[str, str, Backbone]],
    inputs: Sequence[EvalInput],
    scorers: Sequence[RewardModel],
    reward: RewardModel | None,
    config: Mapping[str, Any],
    *,
    num_samples: int,
    seeds: int,
    seed: int,
    unavailable: Mapping[str, str] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Evaluate, write the record and example images, mark the stage done."""
    fingerprint = store.begin("eval", config)
    evaluation = evaluate(
        models,
        inputs,
        scorers,
        reward,
        num_samples=num_samples,
        seeds=seeds,
        seed=seed,
        on_progress=on_progress,
    )
    evaluation.unavailable = {**(unavailable or {}), **evaluation.unavailable}
    folder = store.stage_dir("eval") / "images"
    for item in inputs:
        images = {"lr": item.lr[0], "hr": item.hr[0] if item.hr is not None else None}
        images |= {model.label: model.examples[item.id] for model in evaluation.models}
        for name, image in images.items():
            if image is not None:
                write_png(folder / item.id / f"{name}.png", tensor_to_array(image))
    record = evaluation.to_record()
    write_text_atomic(store.stage_dir("eval") / RESULT_FILE, json.dumps(record, indent=2) + "\n")
    store.complete("eval", fingerprint, inputs=len(inputs), num_samples=num_samples, seeds=seeds)
    return evaluation


def read_eval(store: RunStore) -> dict[str, Any] | None:
    """The stored evaluation record of a run, or None when the stage has not finished."""
    if store.completion("eval") is None:
        return None
    return json.loads((store.stage_dir("eval") / RESULT_FILE).read_text(encoding="utf-8"))
