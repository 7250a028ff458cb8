"""The weighted Diffusion-DPO objective (docs/method.md §5), for any backbone.

For a pair (winner w, loser l) of one group, one timestep t and one noise ε shared by
both, the backbone gives per-sample regression errors of the policy and of the frozen
reference::

    e(x) = mean over every non-batch dimension of (target(x) − prediction(x_t, t, c))²
    Δ    = (e_θ(w) − e_ref(w)) − (e_θ(l) − e_ref(l))
    z    = −β/2 · Δ                              (the implicit reward margin)

and the pair's loss is a function of z:

* ``sigmoid`` (the paper, Diffusion-DPO): −log σ(z)
* ``hinge`` (SLiC): max(0, 1 − z)
* ``ipo``: (z − ½)², IPO's squared loss (h − 1/(2β))² multiplied by β² so that the
  learning rate means the same as for the other variants.

Each pair's loss is multiplied by its weight (hierarchical weighting, docs/method.md §4) and the
batch loss is the mean over pairs. A pair counts as correctly ranked when Δ < 0 (the
policy moved towards the winner more than towards the loser); ties count as half.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

LossVariant = Literal["sigmoid", "hinge", "ipo"]
LOSS_VARIANTS: tuple[str, ...] = ("sigmoid", "hinge", "ipo")


@dataclass
class PairErrors:
    """Per-sample errors of winners and losers (each a vector over the pairs)."""

    policy_winner: torch.Tensor
    policy_loser: torch.Tensor
    reference_winner: torch.Tensor
    reference_loser: torch.Tensor


@dataclass
class DpoTerms:
    """The loss of a batch and the per-pair quantities it is made of."""

    loss: torch.Tensor  #: scalar: mean over pairs of weight × pair loss
    pair_loss: torch.Tensor  #: per pair, before weighting
    delta: torch.Tensor  #: Δ per pair
    margin: torch.Tensor  #: z = −β/2 · Δ per pair
    winner_margin: torch.Tensor  #: e_θ(w) − e_ref(w) per pair
    loser_margin: torch.Tensor  #: e_θ(l) − e_ref(l) per pair
    correct: torch.Tensor  #: 1 where Δ < 0, ½ where Δ = 0, 0 otherwise
    weights: torch.Tensor  #: the pair weights used


def per_sample_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every dimension but the first, in float32."""
    difference = prediction.float() - target.float()
    return difference.pow(2).flatten(1).mean(dim=1)


def pair_loss(margin: torch.Tensor, variant: LossVariant) -> torch.Tensor:
    """The loss of each pair from its implicit reward margin z."""
    if variant == "sigmoid":
        return -F.logsigmoid(margin)
    if variant == "hinge":
        return torch.relu(1 - margin)
    if variant == "ipo":
        return (margin - 0.5) ** 2
    raise ValueError(f"unknown DPO loss variant {variant!r}; choose one of {', '.join(LOSS_VARIANTS)}")


def dpo_loss(
    errors: PairErrors,
    weights: torch.Tensor | None = None,
    *,
    beta: float = 5000.0,
    variant: LossVariant = "sigmoid",
) -> DpoTerms:
    """The weighted DPO loss of a batch of pairs from their per-sample errors."""
    winner_margin = errors.policy_winner - errors.reference_winner.detach()
    loser_margin = errors.policy_loser - errors.reference_loser.detach()
    delta = winner_margin - loser_margin
    margin = -0.5 * beta * delta
    losses = pair_loss(margin, variant)
    if weights is None:
        weights = torch.ones_like(losses)
    weights = weights.to(losses.device, losses.dtype)
    detached = delta.detach()
    correct = (detached < 0).float() + 0.5 * (detached == 0).float()
    return DpoTerms(
        loss=(weights * losses).mean(),
        pair_loss=losses,
        delta=delta,
        margin=margin,
        winner_margin=winner_margin,
        loser_margin=loser_margin,
        correct=correct,
        weights=weights,
    )


def pair_errors(
    backbone,
    x0_winner: torch.Tensor,
    x0_loser: torch.Tensor,
    condition: Mapping[str, torch.Tensor],
    timesteps: torch.Tensor,
    noise: torch.Tensor,
    *,
    policy=None,
) -> PairErrors:
    """Per-sample errors of policy and reference, winners and losers in one batched pass.

    Winner and loser of pair i share ``timesteps[i]`` and ``noise[i]``; ``condition``
    holds one entry per pair (it is repeated for the losers). ``policy`` is the callable
    that runs the policy — the backbone's own ``predict`` unless the trainer wrapped it
    (e.g. in DistributedDataParallel).
    """
    n = x0_winner.shape[0]
    x0 = torch.cat([x0_winner, x0_loser])
    both_t = torch.cat([timesteps, timesteps])
    x_t, target = backbone.noisy(x0, torch.cat([noise, noise]), both_t)
    both_condition = {key: torch.cat([value, value]) for key, value in condition.items()}
    predict = policy if policy is not None else backbone.predict
    policy_error = per_sample_error(predict(x_t, both_t, both_condition), target)
    with torch.no_grad():
        reference = backbone.predict(x_t, both_t, both_condition, reference=True)
        reference_error = per_sample_error(reference, target)
    return PairErrors(
        policy_winner=policy_error[:n],
        policy_loser=policy_error[n:],
        reference_winner=reference_error[:n],
        reference_loser=reference_error[n:],
    )
