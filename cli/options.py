"""Option types shared by several commands, so each flag reads the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
RunDir = Annotated[Path, typer.Argument(metavar="RUN", help="Run directory.")]

#: M, the candidates per LR input (``dp2o sample``, ``dp2o upscale``).
NumCandidates = Annotated[
    int, typer.Option("--num-candidates", "-m", min=1, help="Candidates per LR input (M).")
]
