"""The DPO trainer: accelerate for devices, processes, precision, checkpoints and trackers.

One optimizer step uses ``batch_size`` pairs over all processes: each process takes its
equal share of the step's pairs in micro-batches of ``micro_batch_size`` and accumulates
gradients (no DDP synchronisation until its last micro-batch). The loss of a micro-batch
is its sum of weight × pair loss scaled so that the step's gradient is that of the mean
over the whole batch, whatever the micro-batch size or process count.

Checkpoints (``checkpoints/step-NNNNNN/``) hold accelerate's state (trained weights as
safetensors, optimizer, random states), the learning-rate schedule as JSON, the tuned
weights in the backbone's own save format and ``position.json`` (the step; the data
position follows from it). They are written to a temporary folder and renamed, so a
checkpoint folder is always complete. A resumed run restores the newest checkpoint that
loads and continues exactly: the pairs, timesteps and noises of every step are functions of
the run seed and the step (see :mod:`dp2o_core.training.data`). Resuming loads nothing that
can run code: tensors come from safetensors or ``torch.load(weights_only=True)``, and a
damaged checkpoint is set aside (``step-NNNNNN.damaged``) in favour of the one before.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from dp2o_core.atomic import follow_umask, write_text_atomic
from dp2o_core.errors import Dp2oError, UsageError, short_reason
from dp2o_core.training.checkpoints import (
    checkpoint_name,
    checkpoint_problem,
    complete_checkpoints,
    read_json_lines,
)
from dp2o_core.training.data import TrainingData
from dp2o_core.training.objective import dpo_loss, pair_errors
from dp2o_core.training.settings import TrainSettings

#: How long a process waits at a barrier for the others (sampling shards can be uneven).
STAGE_WAIT_HOURS = 12


class TrainingDiverged(Dp2oError):
    """The loss became NaN or infinite; the checkpoints written before are kept."""


class CheckpointWriteError(Dp2oError):
    """A checkpoint could not be written (most often: the disk is full)."""

    def __init__(self, staging: Path, step: int, error: BaseException, last: Path | None) -> None:
        free = ""
        with contextlib.suppress(OSError):
            free = f"; {shutil.disk_usage(staging.parent).free / 2**30:.2f} GiB are free there now"
        detail = short_reason(error)
        super().__init__(
            f"writing the checkpoint of step {step} under {staging.parent} failed ({detail}){free}. "
            "If the disk is full, free space (or lower keep_checkpoints) and run the same command "
            "again: training resumes from "
            + (f"{last}." if last else "the start (no checkpoint was written yet).")
        )


@dataclass
class StepMetrics:
    """What one optimizer step reports (means over the step's pairs)."""

    step: int
    loss: float
    implicit_accuracy: float
    winner_margin: float  #: e_θ(w) − e_ref(w): below 0 when the policy fits winners better than the reference
    loser_margin: float  #: e_θ(l) − e_ref(l)
    reward_margin: float  #: z = −β/2·Δ
    weight: float
    grad_norm: float
    learning_rate: float
    pairs: int


@dataclass
class TrainResult:
    """The outcome of :meth:`Trainer.run`."""

    steps: int
    resumed_from: int | None
    weights: Path
    history: list[Any] = field(default_factory=list)

    @property
    def final(self) -> StepMetrics | None:
        """The metrics of the last step."""
        return self.history[-1] if self.history else None


class PolicyModule(torch.nn.Module):
    """The backbone's policy prediction as one module owning the trained parameters.

    This is what accelerate prepares (DistributedDataParallel, autocast, checkpoints): its
    parameters are the backbone's own trained tensors, so any backbone trains under DDP
    without exposing its network layout.
    """

    def __init__(self, backbone: Any) -> None:
        super().__init__()
        self._backbone = (backbone,)  # a tuple: not registered as a submodule
        self.trained = torch.nn.ParameterList(list(backbone.trainable_parameters()))
        if len(self.trained) == 0:
            raise Dp2oError(
                f"backbone {backbone.name!r} has no trainable parameters after prepare_training()"
            )

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, condition: dict[str, torch.Tensor]):
        return self._backbone[0].predict(x_t, timesteps, condition)


def make_accelerator(settings: TrainSettings, directory: Path, *, cpu: bool | None = None):
    """An Accelerator with the run's precision and tracker (tensorboard unless unavailable).

    ``cpu`` (default: when no GPU is available) makes processes started by ``accelerate
    launch`` or ``torchrun`` one gloo process group on the CPU instead of independent runs.
    """
    from accelerate import Accelerator
    from accelerate.utils import (
        InitProcessGroupKwargs,
        ProjectConfiguration,
        is_tensorboard_available,
        is_wandb_available,
    )

    log_with = None
    if settings.tracker == "tensorboard" and is_tensorboard_available():
        log_with = "tensorboard"
    elif settings.tracker == "wandb":
        if not is_wandb_available():
            raise UsageError(
                "tracker 'wandb' needs the wandb package: pip install wandb (or use tensorboard)"
            )
        log_with = "wandb"
    project = ProjectConfiguration(project_dir=str(directory), logging_dir=str(directory / "logs"))
    if cpu is None:
        cpu = not torch.cuda.is_available()
    if cpu and settings.mixed_precision == "fp16":
        raise UsageError(
            "mixed_precision fp16 needs a GPU (its loss scaling does not run on the CPU); use bf16 or no"
        )
    return Accelerator(
        mixed_precision=settings.mixed_precision,
        log_with=log_with,
        project_config=project,
        cpu=cpu,
        # processes wait for each other at the end of each stage, e.g. while process 0 makes pairs
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=STAGE_WAIT_HOURS))],
    )


class Trainer:
    """Weighted Diffusion-DPO on a run's pairs; ``Trainer(...).run()`` trains and saves."""

    def __init__(
        self,
        backbone: Any,
        data: TrainingData,
        settings: TrainSettings,
        directory: Path,
        accelerator: Any,
        *,
        tracker_config: dict[str, Any] | None = None,
        start_from: Callable[[Any], None] | None = None,
    ) -> None:
        self.backbone = backbone
        #: sets the trained parameters' starting values after prepare_training (None: as loaded)
        self.start_from = start_from
        self.data = data
        self.settings = settings
        self.directory = Path(directory)
        self.accelerator = accelerator
        self.tracker_config = tracker_config or {}
        world = accelerator.num_processes
        if settings.batch_size % world:
            raise UsageError(
                f"batch_size {settings.batch_size} is not divisible by the {world} processes; "
                f"choose a multiple of {world}"
            )
        self.share = settings.batch_size // world

    def _forward_precision(self):
        """The autocast of the forward passes: ``mixed_precision`` when set; otherwise, when the
        backbone keeps its frozen networks in bfloat16 or float16 (``dtype=…``) beside the
        float32 trained part, autocast in that dtype — without it the two meet in one matmul and
        fail — and no autocast for a float32 backbone."""
        frozen = getattr(self.backbone, "dtype", None)
        if self.settings.mixed_precision != "no" or frozen not in (torch.bfloat16, torch.float16):
            return self.accelerator.autocast()
        return torch.autocast(device_type=self.accelerator.device.type, dtype=frozen)

    # -- paths -------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        """Where checkpoints are kept."""
        return self.directory / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        """One JSON line of :class:`StepMetrics` per step (process 0 writes it)."""
        return self.directory / "metrics.jsonl"

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        found = complete_checkpoints(self.checkpoints)
        return found[-1][1] if found else None

    # -- the loop ----------------------------------------------------------------------------
    def run(
        self,
        *,
        resume: bool = True,
        on_step: Callable[[Any], None] | None = None,
        on_micro_batch: Callable[[int, int], None] | None = None,
    ) -> TrainResult:
        """Train to ``max_steps`` (continuing from the newest checkpoint when ``resume``).

        ``on_step(metrics)`` follows every optimizer step; ``on_micro_batch(done, count)`` every
        micro-batch within one (so a progress bar moves during a long step)."""
        s, acc = self.settings, self.accelerator
        self._prepare_backbone()
        if self.start_from is not None:
            self.start_from(self.backbone)
        if acc.num_processes > 1:
            self._freeze_unused_parameters()
        policy = PolicyModule(self.backbone)
        optimizer = self._optimizer(policy.parameters())
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self._learning_rate_factor)
        policy, optimizer = acc.prepare(policy, optimizer)
        # the schedule is saved as JSON beside accelerate's state, not registered with it:
        # accelerate pickles registered objects and unpickles them with weights_only=False

        start = resumed_from = self._resume(schedule) if resume else None
        start = start or 0
        history = self._history_until(start)
        if acc.is_main_process:
            self._write_history(history)
        if acc.log_with:
            acc.init_trackers("dp2o", config=self.tracker_config)

        parameters = [p for p in policy.parameters() if p.requires_grad]
        for step in range(start, s.max_steps):
            metrics = self._step(step, policy, parameters, optimizer, schedule, on_micro_batch)
            history.append(metrics)
            if acc.is_main_process:
                with self.metrics_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(asdict(metrics)) + "\n")
            if acc.log_with and (step + 1) % s.log_every == 0:
                acc.log({k: v for k, v in asdict(metrics).items() if k != "step"}, step=step + 1)
            if (step + 1) % s.checkpoint_every == 0 and step + 1 < s.max_steps:
                self._save_checkpoint(step + 1, schedule)
            if on_step is not None:
                on_step(metrics)
        weights = self.directory / "final"
        self._save_weights(weights)
        for tracker in acc.trackers:  # not end_training(): that also ends the process group
            tracker.finish()
        return TrainResult(steps=s.max_steps, resumed_from=resumed_from, weights=weights, history=history)

    def _step(
        self,
        step: int,
        policy,
        parameters,
        optimizer,
        schedule,
        on_micro_batch: Callable[[int, int], None] | None = None,
    ):
        """One optimizer step over this process's share of the step's examples (micro-batches
        accumulated, DDP synchronised on the last); returns the step's metrics."""
        s, acc = self.settings, self.accelerator
        chunks = self._micro_batches(step)
        totals = None  # sums over this process's examples: the loss first, the count last
        following = [*chunks[1:], self._micro_batches(step + 1)[0] if step + 1 < s.max_steps else []]
        for index, chunk in enumerate(chunks):
            if following[index]:
                self._read_ahead(following[index])
            synchronise = index == len(chunks) - 1
            with contextlib.nullcontext() if synchronise else acc.no_sync(policy):
                with self._forward_precision():
                    loss_sum, sums = self._micro_batch(chunk, policy)
                acc.backward(loss_sum * acc.num_processes / s.batch_size)
            sums = sums.to(device=acc.device, dtype=torch.float64)
            totals = sums if totals is None else totals + sums
            if on_micro_batch is not None:
                on_micro_batch(index + 1, len(chunks))
        assert totals is not None
        totals = acc.reduce(totals, reduction="sum")
        loss = float(totals[0]) / float(totals[-1])
        if not math.isfinite(loss):
            last = self.latest_checkpoint()
            raise TrainingDiverged(
                f"the {self.objective_name} loss became {loss} at step {step + 1}; training stopped before "
                "updating the weights. "
                + (f"The last good checkpoint is {last}. " if last else "No checkpoint was written yet. ")
                + self.divergence_advice
            )
        max_norm = s.max_grad_norm if s.max_grad_norm > 0 else float("inf")
        grad_norm = acc.clip_grad_norm_(parameters, max_norm)
        learning_rate = schedule.get_last_lr()[0]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        self._after_optimizer_step(step)
        grad = float(grad_norm) if grad_norm is not None else float("nan")
        return self._metrics(step + 1, totals, grad, learning_rate)

    def _micro_batches(self, step: int) -> list[list[int]]:
        """The global positions of this process's micro-batches of ``step``."""
        s = self.settings
        first = step * s.batch_size + self.accelerator.process_index * self.share
        positions = list(range(first, first + self.share))
        return [positions[i : i + s.micro_batch_size] for i in range(0, len(positions), s.micro_batch_size)]

    def _read_ahead(self, positions: list[int]) -> None:
        """Let the data read the micro-batch after this one while this one computes (data
        without :meth:`read_ahead` reads each batch when asked)."""
        read_ahead = getattr(self.data, "read_ahead", None)
        if read_ahead is not None:
            read_ahead(positions)

    # -- the objective (what a subclass for another objective replaces) --------------------------
    #: how the loss is named in messages
    objective_name = "DPO"
    #: what to do when the loss diverges
    divergence_advice = (
        "Lower the learning rate or beta, or use mixed_precision=no, then rerun with --resume."
    )
    #: the metrics record of one step (``metrics.jsonl`` holds one per line)
    metrics_type: type = StepMetrics

    def _micro_batch(self, positions: Sequence[int], policy) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of the examples at these global positions, summed (what is back-propagated,
        before the step's scaling), and a vector of sums for the metrics: the same loss sum
        first, the example count last. ``policy`` is the prepared module (None: the backbone's
        own prediction)."""
        batch = self.data.batch(positions, self.accelerator.device)
        errors = pair_errors(
            self.backbone,
            batch.x0_winner,
            batch.x0_loser,
            batch.condition,
            batch.timesteps,
            batch.noise,
            policy=policy,
        )
        terms = dpo_loss(errors, batch.weights, beta=self.settings.beta, variant=self.settings.loss)
        weighted = (terms.weights * terms.pair_loss).sum()
        sums = torch.stack(
            [
                weighted.detach(),
                terms.correct.sum(),
                terms.winner_margin.detach().sum(),
                terms.loser_margin.detach().sum(),
                terms.margin.detach().sum(),
                terms.weights.sum(),
                torch.tensor(float(len(positions)), device=weighted.device),
            ]
        )
        return weighted, sums

    def _metrics(self, step: int, totals: torch.Tensor, grad_norm: float, learning_rate: float):
        """The step's metrics from the summed vector of :meth:`_micro_batch` over all processes."""
        count = float(totals[6])
        return StepMetrics(
            step=step,
            loss=float(totals[0]) / count,
            implicit_accuracy=float(totals[1]) / count,
            winner_margin=float(totals[2]) / count,
            loser_margin=float(totals[3]) / count,
            reward_margin=float(totals[4]) / count,
            weight=float(totals[5]) / count,
            grad_norm=grad_norm,
            learning_rate=learning_rate,
            pairs=int(count),
        )

    def _prepare_backbone(self) -> None:
        """Make the backbone trainable (DPO: with its frozen reference)."""
        if not getattr(self.data, "needs_encoder", True):
            self.backbone.release_image_encoder()  # x₀ and conditions all come from the caches
        self.backbone.prepare_training()

    def _after_optimizer_step(self, step: int) -> None:
        """Called after each optimizer step (0-based ``step``); nothing for DPO."""

    def _save_extra_state(self, folder: Path) -> None:
        """Write what this objective keeps beyond accelerate's state into a checkpoint folder."""

    def _load_extra_state(self, folder: Path) -> None:
        """Restore what :meth:`_save_extra_state` wrote."""

    # -- resuming ----------------------------------------------------------------------------
    def _resume(self, schedule) -> int | None:
        """Load the newest checkpoint that loads; its step, or None when there is none.

        Every process checks the same files and so picks the same checkpoint. A damaged one
        (truncated, emptied, or holding a pickle that is more than tensors) is reported and
        renamed ``step-NNNNNN.damaged`` by process 0, and the one before it is tried.
        """
        acc = self.accelerator
        for step, path in reversed(complete_checkpoints(self.checkpoints)):
            problem = checkpoint_problem(path)
            if problem is None:
                try:
                    acc.load_state(str(path / "state"), load_kwargs={"weights_only": True})
                    _load_schedule(schedule, path / "state" / "schedule.json", step)
                    self._load_extra_state(path)
                except Exception as error:  # noqa: BLE001 - reported with the checkpoint's name
                    raise Dp2oError(
                        f"checkpoint {path} passed its checks but did not load ({error}). Move it "
                        "aside to resume from the one before, or train from the start with --restart."
                    ) from error
                return step
            acc.print(f"Checkpoint {path.name} cannot be resumed from: {problem}. Trying the one before.")
            acc.wait_for_everyone()
            if acc.is_main_process:
                path.rename(path.with_name(f"{path.name}.damaged"))
            acc.wait_for_everyone()
        return None

    # -- pieces ------------------------------------------------------------------------------
    def _freeze_unused_parameters(self) -> None:
        """Freeze trainable parameters the loss never reaches, which DDP cannot synchronise.

        One local forward and backward pass on the first pairs finds them (for example
        ControlNet blocks a base model with fewer blocks never reads). They would get no
        gradient anyway, so freezing them changes nothing but lets DDP run.
        """
        loss, _ = self._micro_batch(range(min(2, self.share)), None)
        loss.backward()
        trainable = list(self.backbone.trainable_parameters())
        unused = [p for p in trainable if p.grad is None]
        for parameter in trainable:
            parameter.grad = None
        for parameter in unused:
            parameter.requires_grad_(False)

    def _learning_rate_factor(self, step: int) -> float:
        """Linear warm-up over ``warmup_steps``, then constant."""
        warmup = self.settings.warmup_steps
        return 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup)

    def _optimizer(self, parameters):
        s = self.settings
        kind = s.optimizer
        if kind == "auto":
            kind = (
                "adamw-8bit" if self.accelerator.device.type == "cuda" and _bitsandbytes_works() else "adamw"
            )
        options = dict(
            lr=s.learning_rate,
            betas=(s.adam_beta1, s.adam_beta2),
            weight_decay=s.weight_decay,
            eps=s.adam_epsilon,
        )
        trainable = [p for p in parameters if p.requires_grad]
        if kind == "adamw-8bit":
            try:
                import bitsandbytes
            except Exception as error:  # noqa: BLE001 - any import failure means 8-bit AdamW is unusable
                raise UsageError(
                    f"optimizer adamw-8bit needs a working bitsandbytes ({error}); use optimizer=adamw"
                ) from None
            return bitsandbytes.optim.AdamW8bit(trainable, **options)
        return torch.optim.AdamW(trainable, **options)

    def _save_checkpoint(self, step: int, schedule) -> None:
        acc = self.accelerator
        final = self.checkpoints / checkpoint_name(step)
        staging = self.checkpoints / f".staging-{checkpoint_name(step)}"
        if acc.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(staging / "state"))
            if acc.is_main_process:
                state = {k: v for k, v in schedule.state_dict().items() if k != "lr_lambdas"}
                write_text_atomic(staging / "state" / "schedule.json", json.dumps(state) + "\n")
                self._save_extra_state(staging)
                self._save_weights_to(staging / "weights")
                write_text_atomic(
                    staging / "position.json",
                    json.dumps({"step": step, "pairs_seen": step * self.settings.batch_size}) + "\n",
                )
        except (OSError, RuntimeError) as error:
            shutil.rmtree(staging, ignore_errors=True)  # frees what the failed write took
            raise CheckpointWriteError(staging, step, error, self.latest_checkpoint()) from error
        if acc.is_main_process:
            follow_umask(staging)
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
            self._prune_checkpoints()
        acc.wait_for_everyone()

    def _prune_checkpoints(self) -> None:
        for _, path in complete_checkpoints(self.checkpoints)[: -self.settings.keep_checkpoints]:
            shutil.rmtree(path, ignore_errors=True)

    def _save_weights(self, target: Path) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            staging = target.with_name(f".staging-{target.name}")
            shutil.rmtree(staging, ignore_errors=True)
            self._save_weights_to(staging)
            follow_umask(staging)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        acc.wait_for_everyone()

    def _save_weights_to(self, directory: Path) -> None:
        """The backbone's trained weights in its own format (what users load)."""
        self.backbone.save(directory)

    def _history_until(self, step: int) -> list[Any]:
        """The metrics logged before ``step`` (those after it are redone by a resumed run)."""
        if not step:
            return []
        return [m for m in read_history(self.metrics_path, self.metrics_type) if m.step <= step]

    def _write_history(self, history: list[Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.metrics_path, "".join(json.dumps(asdict(m)) + "\n" for m in history))


def _load_schedule(schedule, path: Path, step: int) -> None:
    """Restore the learning-rate schedule from its JSON record, or (checkpoints written
    before it existed) by stepping a fresh one ``step`` times: it depends on the step only."""
    if path.exists():
        state = json.loads(path.read_text(encoding="utf-8"))
        state["lr_lambdas"] = [None] * len(schedule.lr_lambdas)
        schedule.load_state_dict(state)
        return
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(step):
            schedule.step()


def read_history(path: Path, kind: type = StepMetrics) -> list[Any]:
    """The step metrics (records of ``kind``) a trainer wrote to ``metrics.jsonl``; a line cut
    short by a killed process is skipped."""
    history = []
    for record in read_json_lines(path):
        with contextlib.suppress(TypeError):
            history.append(kind(**record))
    return history


def tracker_config(config: Mapping[str, Any], section: str) -> dict[str, Any]:
    """A training stage's configuration as the trackers' flat hyper-parameter table: the
    ``section`` settings (``train``, ``pretrain``) prefixed with its name, the backbone's name
    and the seed, scalars only."""
    flat = {f"{section}/{k}": v for k, v in config.get(section, {}).items()}
    flat["backbone"] = config.get("backbone", {}).get("name")
    flat["seed"] = config.get("seed")
    return {k: v for k, v in flat.items() if isinstance(v, int | float | str | bool)}


def _bitsandbytes_works() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken CUDA setup raises all sorts of errors at import
        return False
    return True
