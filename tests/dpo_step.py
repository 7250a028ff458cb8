"""One DPO step on a backbone under test: the pair errors before and after an SGD step on a
pair of its own candidates' latents, with the checks every backbone must pass — the frozen
reference predicts the same after the step, the policy does not."""

from __future__ import annotations

import torch

from dp2o_core.training.objective import PairErrors, dpo_loss, pair_errors


def one_dpo_step(model, x0: torch.Tensor, condition) -> tuple[PairErrors, PairErrors]:
    """(errors before, errors after) one SGD step (lr 1, β = 5000) on winner ``x0[:1]`` and
    loser ``x0[1:2]``; asserts the reference stayed and the policy moved. Training must be
    prepared (``model.prepare_training()``)."""
    timesteps = model.sample_timesteps(1, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(x0[:1].shape, generator=torch.Generator().manual_seed(1)).to(x0.device, x0.dtype)
    before = pair_errors(model, x0[:1], x0[1:2], condition, timesteps, noise)
    dpo_loss(before, beta=5000.0).loss.backward()
    torch.optim.SGD(model.trainable_parameters(), lr=1.0).step()
    with torch.no_grad():
        after = pair_errors(model, x0[:1], x0[1:2], condition, timesteps, noise)
    assert torch.equal(after.reference_winner, before.reference_winner)  # the reference stays
    assert not torch.allclose(after.policy_winner, before.policy_winner)  # the policy moved
    return before, after
