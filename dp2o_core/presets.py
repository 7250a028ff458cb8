"""The embedded default run: what ``dp2o train`` does when given no backbone and no config.

It runs the whole method offline on a CPU in minutes — the bundled ``tiny-sr`` generator,
scikit-image's photographs (training split; two photographs held out), the ``bicubic``
degradation tiny-sr was pretrained with, the offline hybrid reward (FSIM, VSI, GMSD + NIQE,
PIQE), ``ratio=0.25`` selection and hierarchical weighting — and ends with a held-out
evaluation of the base and tuned models. docs/embedded.md explains the sizes chosen and
their timings. Any flag given to ``dp2o train`` is layered over these values.
"""

from __future__ import annotations

from typing import Any

from dp2o_core.config import RunConfig

EMBEDDED_DEFAULT: dict[str, Any] = {
    "backbone": "tiny-sr",
    "data": "photos:split=train,crop=96,crop_mode=random,crops_per_image=3",
    "degradation": "bicubic",
    "reward": "hybrid-offline",
    "selector": "ratio=0.25",
    "weighting": "hierarchical",
    "eval_data": "photos:split=held-out,crop=96,crop_mode=random,crops_per_image=4",
    "sample": {"num_candidates": 16},
    "train": {
        "max_steps": 60,
        "batch_size": 16,
        "micro_batch_size": 8,
        "learning_rate": 1e-5,
        "warmup_steps": 5,
        "beta": 5000.0,
        "checkpoint_every": 20,
        "tracker": "tensorboard",
    },
    "eval": {"seeds": 1},
}


def embedded_default() -> RunConfig:
    """The embedded default as a run configuration."""
    return RunConfig.model_validate(EMBEDDED_DEFAULT)
