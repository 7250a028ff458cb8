"""The weighted Diffusion-DPO objective against hand-computed values (docs/method.md §5)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import save_tiny_flux, save_tiny_sd

from dp2o_core.specs import resolve_spec
from dp2o_core.training.objective import PairErrors, dpo_loss, pair_errors

# two pairs: e_θ(w), e_θ(l), e_ref(w), e_ref(l)
POLICY_W, POLICY_L = [0.10, 0.30], [0.20, 0.25]
REF_W, REF_L = [0.12, 0.30], [0.19, 0.20]
BETA = 10.0


def _errors(policy_w=POLICY_W, policy_l=POLICY_L) -> PairErrors:
    return PairErrors(
        torch.tensor(policy_w, dtype=torch.float64),
        torch.tensor(policy_l, dtype=torch.float64),
        torch.tensor(REF_W, dtype=torch.float64),
        torch.tensor(REF_L, dtype=torch.float64),
    )


def _by_hand(variant: str, weights=(1.0, 1.0)) -> float:
    losses = []
    for pw, pl, rw, rl in zip(POLICY_W, POLICY_L, REF_W, REF_L, strict=True):
        delta = (pw - rw) - (pl - rl)
        z = -BETA / 2 * delta
        losses.append(
            {
                "sigmoid": -math.log(1 / (1 + math.exp(-z))),
                "hinge": max(0.0, 1 - z),
                "ipo": (z - 0.5) ** 2,
            }[variant]
        )
    return sum(w * v for w, v in zip(weights, losses, strict=True)) / len(losses)


@pytest.mark.parametrize("variant", ["sigmoid", "hinge", "ipo"])
def test_loss_equals_the_hand_computed_value(variant):
    terms = dpo_loss(_errors(), torch.tensor([0.5, 1.5]), beta=BETA, variant=variant)
    assert terms.loss.item() == pytest.approx(_by_hand(variant, (0.5, 1.5)), rel=1e-12)
    # pair 0: Δ = (−0.02) − (0.01) < 0 → correct; pair 1: Δ = 0 − 0.05 < 0 → correct
    assert terms.delta.tolist() == pytest.approx([-0.03, -0.05])
    assert terms.correct.tolist() == [1.0, 1.0]
    assert terms.winner_margin.tolist() == pytest.approx([-0.02, 0.0])
    assert terms.loser_margin.tolist() == pytest.approx([0.01, 0.05])
    assert terms.margin.tolist() == pytest.approx([0.15, 0.25])


def test_ties_count_half_and_wrong_order_counts_zero():
    terms = dpo_loss(_errors(policy_w=[0.12, 0.40], policy_l=[0.19, 0.20]), beta=BETA)
    assert terms.correct.tolist() == [0.5, 0.0]


@pytest.mark.parametrize("variant", ["sigmoid", "hinge", "ipo"])
def test_a_weight_of_zero_removes_a_pairs_gradient_and_two_doubles_it(variant):
    def gradient(weights):
        theta = torch.tensor([0.10, 0.30], dtype=torch.float64, requires_grad=True)
        errors = PairErrors(
            theta, torch.tensor(POLICY_L).double(), torch.tensor(REF_W).double(), torch.tensor(REF_L).double()
        )
        dpo_loss(errors, torch.tensor(weights), beta=BETA, variant=variant).loss.backward()
        return theta.grad

    one, zero, two = gradient([1.0, 1.0]), gradient([0.0, 1.0]), gradient([2.0, 1.0])
    assert one[0] != 0
    assert zero[0] == 0 and zero[1] == one[1]
    assert two[0] == pytest.approx(2 * one[0]) and two[1] == one[1]


# -- with real backbones: every prediction type -------------------------------------------------
@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    made = {}
    for kind in ("epsilon", "v_prediction"):
        folder = save_tiny_sd(tmp_path_factory.mktemp(f"sd-{kind}"), prediction_type=kind)
        made[kind] = resolve_spec_build("sd2", f"model={folder},device=cpu,geometry=exact")
    flux = save_tiny_flux(tmp_path_factory.mktemp("flux"))
    made["flow"] = resolve_spec_build("flux", f"model={flux},device=cpu,geometry=exact")
    return made


def resolve_spec_build(name, options):
    from dp2o_core.registry import PluginManager

    return resolve_spec(PluginManager(), "backbone", f"{name}:{options}").build()


def _hand_target(backbone, kind, x0, noise, t):
    """x_t and target written out from the formulas, not from the backbone's noisy()."""
    if kind == "flow":
        s = t.view(-1, 1, 1, 1)
        return (1 - s) * x0 + s * noise, noise - x0
    alphas = backbone.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = alphas.sqrt() * x0 + (1 - alphas).sqrt() * noise
    target = noise if kind == "epsilon" else alphas.sqrt() * noise - (1 - alphas).sqrt() * x0
    return x_t, target


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "flow"])
def test_loss_from_a_backbone_matches_the_formula_for_each_prediction_type(backbones, kind):
    backbone = backbones[kind]
    backbone.prepare_training()
    with torch.no_grad():  # move the policy away from the reference
        for parameter in backbone.trainable_parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    generator = torch.Generator().manual_seed(0)
    n, latent = 2, (4, 4, 4)
    x0_w, x0_l, noise = (torch.randn(n, *latent, generator=generator) for _ in range(3))
    t = backbone.sample_timesteps(n, generator=generator)
    lr = torch.rand(1, 3, 8, 8, generator=generator)
    condition = {
        key: value.repeat(n, *([1] * (value.dim() - 1)))
        for key, value in {**backbone.encode_condition(lr), **backbone.encode_prompts([""])}.items()
    }
    terms = dpo_loss(pair_errors(backbone, x0_w, x0_l, condition, t, noise), beta=BETA)

    def error(x0, reference):
        x_t, target = _hand_target(backbone, kind, x0, noise, t)
        with torch.no_grad():
            prediction = backbone.predict(x_t, t, condition, reference=reference)
        return ((prediction - target) ** 2).mean(dim=(1, 2, 3))

    delta = (error(x0_w, False) - error(x0_w, True)) - (error(x0_l, False) - error(x0_l, True))
    expected = (-torch.nn.functional.logsigmoid(-BETA / 2 * delta)).mean()
    assert delta.abs().max() > 0, "the perturbed policy should differ from the reference"
    assert terms.loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert terms.delta.detach().tolist() == pytest.approx(delta.tolist(), rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("kind", ["epsilon", "flow"])
def test_policy_equal_to_reference_gives_log_2_and_accuracy_one_half(tmp_path, kind):
    if kind == "flow":
        model = save_tiny_flux(tmp_path / "m")
        backbone = resolve_spec_build("flux", f"model={model},device=cpu,geometry=exact")
        latent = (4, 4, 4)
    else:
        model = save_tiny_sd(tmp_path / "m")
        backbone = resolve_spec_build("sd2", f"model={model},device=cpu,geometry=exact")
        latent = (4, 4, 4)
    backbone.prepare_training()
    generator = torch.Generator().manual_seed(3)
    x0_w, x0_l, noise = (torch.randn(3, *latent, generator=generator) for _ in range(3))
    t = backbone.sample_timesteps(3, generator=generator)
    condition = {
        key: value.repeat(3, *([1] * (value.dim() - 1)))
        for key, value in {
            **backbone.encode_condition(torch.rand(1, 3, 8, 8, generator=generator)),
            **backbone.encode_prompts([""]),
        }.items()
    }
    terms = dpo_loss(pair_errors(backbone, x0_w, x0_l, condition, t, noise), beta=5000.0)
    assert terms.loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert terms.correct.mean().item() == 0.5
