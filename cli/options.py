"""Option types of the commands, so each flag reads the same everywhere and a command's
signature is one line per option. ``None`` means "not given": the config file (or the
default) decides."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

ConfigFile = Annotated[
    Path | None, typer.Option("--config", metavar="FILE", help="TOML or YAML run configuration.")
]
BackboneSpec = Annotated[
    str | None,
    typer.Option(
        "--backbone",
        metavar="SPEC",
        help="Backbone spec, e.g. 'flux' or 'sd2' (default: the bundled 'tiny-sr').",
    ),
]
RewardSpec = Annotated[
    str | None, typer.Option("--reward", metavar="SPEC", help="Reward spec, e.g. 'hybrid'.")
]
SelectorSpec = Annotated[
    str | None, typer.Option("--selector", metavar="SPEC", help="Pair selector spec, e.g. 'ratio=0.25'.")
]
WeightingSpec = Annotated[
    str | None,
    typer.Option("--weighting", metavar="SPEC", help="Pair weighting spec, e.g. 'hierarchical'."),
]
Seed = Annotated[int | None, typer.Option("--seed", help="Base seed of the run.")]
DataSpec = Annotated[
    str | None,
    typer.Option(
        "--data",
        metavar="SPEC",
        help="Data set spec, e.g. 'hr:path=images,crop=512' or 'paired:path=RealSR'.",
    ),
]
DegradationSpec = Annotated[
    str | None,
    typer.Option(
        "--degradation", metavar="SPEC", help="How LR is made from HR: 'realesrgan' (default) or 'bicubic'."
    ),
]
PrompterSpec = Annotated[
    str | None,
    typer.Option(
        "--prompter",
        metavar="SPEC",
        help="The prompt of each LR input: 'sidecar' (its .txt or prompts file; default) or 'fixed:text=…'.",
    ),
]
RunDir = Annotated[Path, typer.Argument(metavar="RUN", help="Run directory.")]

#: M, the outputs per LR input of ``dp2o upscale``.
NumOutputs = Annotated[
    int, typer.Option("--num-candidates", "-m", min=1, help="Candidates per LR input (M).")
]
#: M of the sample stage (``dp2o sample``, ``dp2o train``): a pair needs two candidates.
NumCandidates = Annotated[
    int | None,
    typer.Option(
        "--num-candidates", "-m", min=2, help="Candidates per LR input (M; default: the config's, 32)."
    ),
]
SharedNoise = Annotated[
    bool | None,
    typer.Option("--shared-noise/--own-noise", help="Candidate m of every group starts from seed + m."),
]
OnBadImage = Annotated[
    Literal["error", "skip"],
    typer.Option("--on-bad-image", help="Stop at an unusable input image, or skip and list it."),
]

# -- dp2o train ----------------------------------------------------------------------------------
RunOption = Annotated[
    Path | None, typer.Option("--run", metavar="DIR", help="Run directory (default: runs/<backbone>).")
]
EvalData = Annotated[
    str | None,
    typer.Option(
        "--eval-data", metavar="SPEC", help="Held-out data evaluated after training (base vs tuned)."
    ),
]
MaxSteps = Annotated[int | None, typer.Option("--max-steps", min=1, help="Optimizer steps.")]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="Pairs per optimizer step (all processes).")
]
MicroBatchSize = Annotated[
    int | None, typer.Option("--micro-batch-size", min=1, help="Pairs per forward pass per process.")
]
LearningRate = Annotated[float | None, typer.Option("--learning-rate", "--lr", help="Learning rate.")]
Beta = Annotated[float | None, typer.Option("--beta", help="DPO β (paper: 5000).")]
Loss = Annotated[Literal["sigmoid", "hinge", "ipo"] | None, typer.Option("--loss", help="DPO loss variant.")]
Rounds = Annotated[
    int | None,
    typer.Option(
        "--rounds",
        min=1,
        metavar="K",
        help="On-policy rounds: round r samples with round r-1's tuned model and trains on from it "
        "(1: offline).",
    ),
]
Reference = Annotated[
    Literal["base", "previous"] | None,
    typer.Option("--reference", help="DPO reference of rounds 2..K: the base model or the previous round's."),
]
FreshData = Annotated[
    bool | None,
    typer.Option(
        "--fresh-data/--same-data", help="Each round draws its own random crops (or reuses round 1's)."
    ),
]
SwapLabels = Annotated[
    float | None,
    typer.Option(
        "--swap-labels",
        min=0.0,
        max=1.0,
        metavar="FRACTION",
        help="Swap winner and loser in this fraction of the pairs: the shuffled-label control (0.5).",
    ),
]
MixedPrecision = Annotated[
    Literal["no", "fp16", "bf16"] | None, typer.Option("--mixed-precision", help="Autocast precision.")
]
CheckpointEvery = Annotated[
    int | None, typer.Option("--checkpoint-every", min=1, help="Steps between checkpoints.")
]
Tracker = Annotated[
    Literal["tensorboard", "wandb", "none"] | None, typer.Option("--tracker", help="Training-curve logger.")
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume/--restart",
        help="Continue training from the newest checkpoint (default), or start training over.",
    ),
]
Redo = Annotated[
    bool,
    typer.Option(
        "--redo",
        help="Allow a changed setting to discard the run's finished sampling or scoring and redo it "
        "(without it such a change stops before anything is written).",
    ),
]


def _shard(text: str | None):
    """``--shard K/N`` as a :class:`~dp2o_core.store.sharding.Shard` (None when not given)."""
    if text is None:
        return None
    from dp2o_core.store.sharding import Shard

    try:
        return Shard.parse(text)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


ShardOption = Annotated[
    Any,  # a Shard or None; the type is imported when the option is given (start-up stays light)
    typer.Option(
        "--shard",
        metavar="K/N",
        parser=_shard,
        help="Be shard job K (from 0) of N jobs started separately (a Slurm array, preemptible VMs) "
        "that fill this run together: this job does every N-th group only, and can be killed and "
        "started again at any time.",
    ),
]
WarmupSteps = Annotated[
    int | None,
    typer.Option("--warmup-steps", min=0, help="Steps of linear learning-rate warm-up from 0 (default 50)."),
]

#: ``dp2o pretrain``'s own settings ([pretrain] in a config file)
Crop = Annotated[int | None, typer.Option("--crop", min=8, help="Side of the square HR crops (default 512).")]
Ema = Annotated[
    float | None,
    typer.Option(
        "--ema", min=0.0, max=0.9999999, help="EMA decay of the saved weights (0: none; default 0.999)."
    ),
]
NullPromptRatio = Annotated[
    float | None,
    typer.Option("--null-prompt-ratio", min=0.0, max=1.0, help="Fraction of crops with the empty prompt."),
]
Schedule = Annotated[
    Literal["cosine", "constant"] | None,
    typer.Option("--schedule", help="Learning rate after warm-up: cosine decay (default) or constant."),
]
ValidateEvery = Annotated[
    int | None,
    typer.Option("--validate-every", min=1, help="Steps between validations on --eval-data (default 500)."),
]
