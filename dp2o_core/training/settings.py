"""The settings of the sample and train stages (sections ``[sample]`` and ``[train]`` of a
run configuration). Defaults follow docs/method.md §3 and §6; importing this imports no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dp2o_core.options import runtime_option


class SampleSettings(BaseModel):
    """How many candidates the sample stage makes per LR input, and from which seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_candidates: int = Field(32, ge=2, description="Candidates per LR input, M (paper: 32 SD2, 64 FLUX).")
    shared_noise: bool = Field(False, description="Candidate m of every group starts from seed + m.")


class OptimisationSettings(BaseModel):
    """What the trainer's optimisation reads besides the steps, batch and learning rate — the same
    for DPO (``[train]``) and for pretraining (``[pretrain]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimizer: Literal["auto", "adamw", "adamw-8bit"] = Field(
        "auto", description="AdamW; 'auto' uses bitsandbytes' 8-bit AdamW when it works on the device."
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW β₁.")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW β₂.")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW ε.")
    max_grad_norm: float = Field(1.0, ge=0, description="Clip the gradient norm to this (0: no clipping).")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "no", description="Autocast precision of the forward passes (trained weights stay float32)."
    )
    keep_checkpoints: int = runtime_option(2, ge=1, description="How many of the newest checkpoints to keep.")
    tracker: Literal["tensorboard", "wandb", "none"] = runtime_option(
        "tensorboard",
        description="Where accelerate logs the training curves (metrics.jsonl is always written).",
    )


class TrainSettings(OptimisationSettings):
    """The DPO objective and the optimisation (docs/method.md §5–§6)."""

    max_steps: int = Field(1000, ge=1, description="Optimizer steps (paper: 1000).")
    batch_size: int = Field(
        1024, ge=1, description="Pairs per optimizer step, over all processes (paper: 1024)."
    )
    micro_batch_size: int = runtime_option(
        4, ge=1, description="Pairs per forward pass in each process; accumulation reaches batch_size."
    )
    learning_rate: float = Field(2e-5, gt=0, description="Learning rate after warm-up (paper: 2e-5).")
    warmup_steps: int = Field(50, ge=0, description="Steps of linear learning-rate warm-up from 0.")
    beta: float = Field(5000.0, gt=0, description="DPO β, the strength of the KL regulariser (paper: 5000).")
    loss: Literal["sigmoid", "hinge", "ipo"] = Field(
        "sigmoid", description="Pair loss of the margin z = −β/2·Δ: −log σ(z), max(0, 1 − z) or (z − ½)²."
    )
    swap_labels: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Fraction of pairs whose winner and loser are swapped, chosen by the seed: a control "
        "experiment (0.5 makes the labels uninformative; a gain that survives it is not the preferences').",
    )
    cache: bool = Field(
        True,
        description="Train from the cached candidate latents and condition encodings (no VAE in the step).",
    )
    checkpoint_every: int = runtime_option(
        100, ge=1, description="Save a resumable checkpoint every this many steps."
    )
    log_every: int = runtime_option(1, ge=1, description="Log metrics to the trackers every this many steps.")


class EvalSettings(BaseModel):
    """The held-out evaluation ``dp2o train`` ends with (when ``eval_data`` is set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_samples: int | None = Field(
        None, ge=1, description="Samples per held-out input, M (none: the sample stage's num_candidates)."
    )
    seeds: int = Field(1, ge=1, description="Seed sets, K (mean ± std over them).")
    metrics: list[str] = Field(
        ["psnry", "ssim"],
        description="pyiqa metrics reported besides the reward's (default: PSNR/SSIM on Y).",
    )


class RoundsSettings(BaseModel):
    """Iterative on-policy rounds (docs/training.md, "Rounds"): round r samples with round
    r − 1's tuned model, scores, pairs and trains on from its weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(
        1,
        ge=1,
        description="Rounds of sample → score → pairs → train (→ eval); 1 is the paper's offline method.",
    )
    reference: Literal["base", "previous"] = Field(
        "previous",
        description="The DPO reference of round r ≥ 2: the base model, or round r − 1's tuned model "
        "(the one that sampled).",
    )
    fresh_data: bool = Field(
        False,
        description="Each round draws its own data (random crops reseeded by round) instead of "
        "reusing round 1's.",
    )


class PretrainSettings(OptimisationSettings):
    """Supervised pretraining of the SR generator (``dp2o pretrain``; docs/training.md,
    "Building your own SR generator"): the backbone's own denoising objective on random HR
    crops whose LR the run's degradation makes afresh every step."""

    max_steps: int = Field(10000, ge=1, description="Optimizer steps.")
    batch_size: int = Field(16, ge=1, description="HR crops per optimizer step, over all processes.")
    micro_batch_size: int = runtime_option(
        4, ge=1, description="Crops per forward pass in each process; accumulation reaches batch_size."
    )
    crop: int = Field(512, ge=8, description="Side of the square HR crops (the LR is crop / scale).")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate (after warm-up).")
    warmup_steps: int = Field(500, ge=0, description="Steps of linear learning-rate warm-up from 0.")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="After warm-up: cosine decay to min_learning_rate, or constant."
    )
    min_learning_rate: float = Field(
        0.1, ge=0, le=1, description="Where the cosine decay ends, as a fraction of learning_rate."
    )
    ema: float = Field(
        0.999,
        ge=0,
        lt=1,
        description="Decay of the exponential moving average of the trained weights that is saved "
        "(0: save the trained weights themselves).",
    )
    null_prompt_ratio: float = Field(
        0.0, ge=0, le=1, description="Fraction of crops trained with the empty prompt (SeeSR: 0.5)."
    )
    validate_every: int = runtime_option(
        500, ge=1, description="Validate on the held-out inputs (--eval-data) every this many steps."
    )
    validation_inputs: int = runtime_option(
        4, ge=1, description="How many held-out inputs validation samples (the first ones)."
    )
    validation_metrics: list[str] = runtime_option(
        ["psnry", "ssim"], description="pyiqa metrics of the validation samples against their HR."
    )
    checkpoint_every: int = runtime_option(
        500, ge=1, description="Save a resumable checkpoint every this many steps."
    )
    log_every: int = runtime_option(
        10, ge=1, description="Log metrics to the trackers every this many steps."
    )
