"""Any pyiqa metric as a reward: raw scores for the scores table, direction from pyiqa."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from dp2o_plugins.network import offline_unless_reachable
from dp2o_plugins.rewards.weights import create_metric, weights_dirs
from pydantic import Field, field_validator

from dp2o_core import MetricInfo, PluginOptions, RewardModel, runtime_option
from dp2o_core.errors import UnknownNameError


def metric_info(name: str) -> MetricInfo:
    """Mode and direction of a pyiqa metric from pyiqa's own configuration (no weights needed)."""
    configs = pyiqa_configs()
    config = configs.get(name)
    if config is None:
        raise UnknownNameError("pyiqa metric", name, configs, hint="`pyiqa.list_models()` lists them.")
    return MetricInfo(
        name=name,
        mode=config.get("metric_mode", "NR"),
        lower_better=bool(config.get("lower_better", False)),
        version=f"pyiqa {metadata.version('pyiqa')}",
        min_size=MIN_SIZES.get(name, 1),
    )


#: The smallest square image each pyiqa metric scores, measured with pyiqa 0.1.16 on random
#: images (one pixel less fails or gives NaN): NIQE's 96-px blocks, MS-SSIM's five scales of an
#: 11-px window, SSIM's window, PIQE's 8-px blocks; metrics not listed score any size tried
#: (PSNR, FSIM, VSI, GMSD down to 7 px). tests/test_preflight.py re-measures the listed ones.
MIN_SIZES = {"niqe": 96, "ms_ssim": 161, "ssim": 11, "piqe": 8}


@functools.cache
def pyiqa_configs() -> dict[str, dict]:
    """pyiqa's table of metric configurations, read without importing pyiqa itself.

    Importing pyiqa imports torch, OpenCV and every network (~0.7 GB, seconds); the table
    is a plain module inside it. Commands that only need a metric's direction (``dp2o
    pairs``, ``dp2o config``) stay light; scoring imports pyiqa as usual.
    """
    import importlib.util

    spec = importlib.util.find_spec("pyiqa")
    if spec is None or not spec.submodule_search_locations:
        raise UnknownNameError("pyiqa metric", "(pyiqa is not installed)", [], hint="pip install pyiqa")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_model_configs.py"
    module_spec = importlib.util.spec_from_file_location("_dp2o_pyiqa_configs", path)
    if module_spec is None or module_spec.loader is None:
        raise UnknownNameError("pyiqa metric", f"(cannot read {path})", [], hint="reinstall pyiqa")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return dict(module.DEFAULT_CONFIGS)


class MetricOptions(PluginOptions):
    """How a pyiqa metric runs; shared by ``pyiqa`` and the members of ``hybrid``."""

    device: str = runtime_option("auto", description="Torch device ('auto' picks cuda when available).")
    batch_size: int | None = runtime_option(
        None, ge=1, description="Candidates per forward pass; none picks 16 on a GPU, 1 on a CPU."
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32",
        description="Autocast precision for learned metrics on the GPU (classical metrics ignore it).",
    )
    weights_dir: Path | None = Field(
        None,
        description="Folder holding downloaded weight files (also DP2O_IQA_WEIGHTS), for offline machines.",
    )
    python: Path | None = runtime_option(
        None,
        description="Run the metric in a worker process of this Python interpreter (an environment with "
        "pyiqa and torch, e.g. for Q-Align's own transformers); none: in dp2o's process.",
    )
    worker_timeout: float = runtime_option(
        900.0, gt=0, description="Seconds a metric worker may take to answer before it is stopped."
    )

    @field_validator("python", "weights_dir", mode="before")
    @classmethod
    def _none_word(cls, value: Any) -> Any:
        return none_word(value)


def none_word(value: Any) -> Any:
    """None for ``none``, ``null`` or an empty text, else ``value``: ``python=none`` means no
    interpreter, not a file called ``none`` (the way to take a recorded worker back out)."""
    return None if isinstance(value, str) and value.strip().lower() in ("", "none", "null") else value


class PyiqaOptions(MetricOptions):
    """Options of a single pyiqa metric."""

    metric: str = Field(..., description="pyiqa metric name, e.g. lpips, maniqa, clipiqa+, niqe.")
    weights: Path | None = Field(None, description="Weight file passed to pyiqa as pretrained_model_path.")
    kwargs: dict[str, Any] = Field(
        {}, description="Extra keyword arguments for pyiqa.create_metric, e.g. [net=vgg, version=0.1]."
    )

    @field_validator("kwargs", mode="before")
    @classmethod
    def _pairs_to_dict(cls, value: Any) -> Any:
        return key_value_pairs(value, _scalar)


def key_value_pairs(value: Any, convert: Any = None) -> Any:
    """A spec's ``[KEY=VALUE, …]`` list as a dict (each value through ``convert``); a dict (from
    a config file's table) passes through. For dict-valued options such as ``kwargs``."""
    if not isinstance(value, list):
        return value
    pairs = {}
    for item in value:
        key, sep, raw = str(item).partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        pairs[key.strip()] = convert(raw.strip()) if convert is not None else raw.strip()
    return pairs


class PyiqaReward(RewardModel):
    """One pyiqa metric (full- or no-reference, per pyiqa), oriented so higher is better."""

    name = "pyiqa"
    Options = PyiqaOptions

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.info = metric_info(self.options.metric)
        self._metric = None

    @classmethod
    def readiness(cls, options: Any) -> list:
        """The metric's Python packages, pyiqa weight file and backbone weights (no network built)."""
        from dp2o_plugins.rewards.readiness import metric_checks

        o = options
        metric_info(o.metric)  # an unknown name is named, with the closest pyiqa metric
        return metric_checks(
            o.metric,
            pyiqa_configs()[o.metric],
            o.weights,
            o.weights_dir,
            f"reward pyiqa: {o.metric}",
            o.python,
        )

    def metrics(self) -> Sequence[MetricInfo]:
        """The one metric, named by its pyiqa name."""
        return [self.info]

    @property
    def metric(self):
        """The pyiqa metric — or the worker that runs it in another interpreter — created on first use."""
        if self._metric is None:
            o = self.options
            # offline when the hub is unreachable: a missing weight file fails at once, not after retries
            with offline_unless_reachable():
                if o.python is not None:
                    from dp2o_plugins.rewards.worker_client import MetricWorker

                    self._metric = MetricWorker(
                        o.python, o.metric, device=str(resolve_device(o.device)), weights=o.weights,
                        folders=weights_dirs(o.weights_dir), kwargs=dict(o.kwargs), timeout=o.worker_timeout,
                    )  # fmt: skip
                else:
                    self._metric = create_metric(
                        o.metric,
                        resolve_device(o.device),
                        o.weights,
                        weights_dirs(o.weights_dir),
                        dict(o.kwargs),
                    )
        return self._metric

    def prepare(self) -> None:
        """Create the pyiqa metric (loading or fetching its weights)."""
        _ = self.metric

    def score(self, candidates, reference=None) -> Mapping[str, Sequence[float]]:
        """Raw scores of every candidate, batched; reference-side work done once where possible."""
        from dp2o_plugins.rewards.scoring import score_candidates

        if self.options.python is not None:
            if self.info.mode == "FR" and reference is None:
                raise ValueError(f"metric {self.info.name!r} is full-reference and needs the HR image")
            values = self.metric.score(
                candidates, reference if self.info.mode == "FR" else None, self.batch_size
            )
            return {self.info.name: values}
        values = score_candidates(
            self.metric, self.info.mode, candidates, reference, self.options.batch_size, self.options.dtype
        )
        return {self.info.name: values}

    @property
    def batch_size(self) -> int:
        """Candidates per call in a worker: the option, else 8."""
        return self.options.batch_size or 8

    def reward(self, scores: Mapping[str, Sequence[float]]):
        """The raw score, negated for lower-is-better metrics."""
        sign = -1.0 if self.info.lower_better else 1.0
        return [sign * float(v) for v in scores[self.info.name]]

    def reward_block(self, scores, offsets):
        """:meth:`reward` for every group of a block at once."""
        import numpy as np

        sign = -1.0 if self.info.lower_better else 1.0
        return sign * np.asarray(scores[self.info.name], dtype=np.float64)


def resolve_device(device: str) -> str:
    """'auto' → the GPU of this process's local rank when there is one, else 'cpu'."""
    if device != "auto":
        return device
    import os

    import torch

    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}" if torch.cuda.is_available() else "cpu"


def _scalar(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("\"'")
