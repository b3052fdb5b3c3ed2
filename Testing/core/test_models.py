"""Tests of headseg.models: sizes from the papers, shapes, factory errors, gradients, serialisation."""

from __future__ import annotations

import io

import pytest
import torch

from headseg.models import (
    ARCHITECTURES,
    AnatomyNet,
    SVNet,
    VNet,
    build_model,
    count_feature_convolutions,
    count_parameters,
)
from headseg.models.blocks import pad_to_multiple

# Documented in the class docstrings; a change here is a change of architecture.
SVNET_PARAMETERS = 8_944_246
VNET_PARAMETERS = 65_178_902
ANATOMYNET_PARAMETERS = 1_459_768


def _on_meta(factory):
    """Build a full-size model without allocating its weights (counting needs shapes only)."""
    with torch.device("meta"):
        return factory()


# ---------------------------------------------------------------- sizes stated by the papers
def test_svnet_parameter_count_matches_paper_8_6_million() -> None:
    count = count_parameters(_on_meta(lambda: SVNet(in_channels=1, out_channels=6)))
    print(f"SVNet(1, 6): {count:,} parameters")
    assert abs(count - 8.6e6) / 8.6e6 < 0.05
    assert count == SVNET_PARAMETERS


def test_vnet_parameter_count_is_the_documented_faithful_value() -> None:
    count = count_parameters(_on_meta(lambda: VNet(in_channels=1, out_channels=6)))
    print(f"VNet(1, 6): {count:,} parameters (SV-net paper quotes 9.6 M; see VNet docstring)")
    assert abs(count - VNET_PARAMETERS) / VNET_PARAMETERS < 0.01
    # The bottom stage alone (3 x 256^2 x 5^3 weights) exceeds the quoted 9.6 M: that figure is not V-Net's.
    bottom = _on_meta(lambda: VNet(in_channels=1, out_channels=6)).down_stages[-1]
    kernels = [m.weight for m in bottom.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (5, 5, 5)]
    assert [tuple(w.shape) for w in kernels] == [(256, 256, 5, 5, 5)] * 3
    assert sum(w.numel() for w in kernels) == 3 * 256 * 256 * 125 > 9.6e6


def test_anatomynet_parameter_count_is_documented() -> None:
    count = count_parameters(_on_meta(lambda: AnatomyNet(in_channels=1, out_channels=10)))
    print(f"AnatomyNet(1, 10): {count:,} parameters")
    assert count == ANATOMYNET_PARAMETERS


@pytest.mark.parametrize(
    ("factory", "expected"),
    [(lambda: SVNet(), 17), (lambda: VNet(), 21), (lambda: SVNet(base_channels=8), 17)],
)
def test_convolution_layer_counts_match_papers(factory, expected: int) -> None:
    assert count_feature_convolutions(_on_meta(factory)) == expected


def test_svnet_uses_3x3x3_and_vnet_5x5x5_stage_kernels() -> None:
    def stage_kernels(model: torch.nn.Module) -> set:
        return {
            m.kernel_size
            for m in model.modules()
            if isinstance(m, torch.nn.Conv3d) and m.stride == (1, 1, 1) and max(m.kernel_size) > 1
        }

    assert stage_kernels(_on_meta(SVNet)) == {(3, 3, 3)}
    assert stage_kernels(_on_meta(VNet)) == {(5, 5, 5)}


def test_anatomynet_downsamples_exactly_once() -> None:
    model = _on_meta(AnatomyNet)
    strided = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d) and max(m.stride) > 1]
    assert len(strided) == 1


# ---------------------------------------------------------------- forward shapes
SHAPE_CASES = [
    (lambda: SVNet(base_channels=8), (1, 1, 16, 64, 64), (1, 6, 16, 64, 64)),
    (lambda: SVNet(base_channels=4), (1, 1, 17, 30, 23), (1, 6, 17, 30, 23)),
    (lambda: SVNet(in_channels=2, out_channels=3, base_channels=4), (2, 2, 16, 16, 16), (2, 3, 16, 16, 16)),
    (lambda: VNet(base_channels=4), (1, 1, 16, 32, 32), (1, 6, 16, 32, 32)),
    (lambda: VNet(base_channels=4, activation="relu"), (1, 1, 9, 20, 18), (1, 6, 9, 20, 18)),
    (lambda: AnatomyNet(widths=(8, 10, 12, 14)), (1, 1, 17, 30, 23), (1, 10, 17, 30, 23)),
    (lambda: AnatomyNet(), (1, 1, 9, 14, 11), (1, 10, 9, 14, 11)),
    (
        lambda: AnatomyNet(in_channels=2, out_channels=8, widths=(8, 8, 8, 8)),
        (2, 2, 6, 8, 10),
        (2, 8, 6, 8, 10),
    ),
]


@pytest.mark.parametrize(("factory", "input_shape", "expected_shape"), SHAPE_CASES)
def test_forward_returns_logits_of_input_size(factory, input_shape, expected_shape) -> None:
    torch.manual_seed(0)
    model = factory().eval()
    with torch.no_grad():
        logits = model(torch.randn(input_shape))
    assert tuple(logits.shape) == expected_shape
    assert torch.isfinite(logits).all()


def test_outputs_are_logits_not_probabilities() -> None:
    torch.manual_seed(0)
    model = SVNet(base_channels=4).eval()
    with torch.no_grad():
        logits = model(3 * torch.randn(1, 1, 16, 16, 16))
    assert logits.min() < 0 or logits.max() > 1
    assert not torch.allclose(logits.sum(dim=1), torch.ones(1))


@pytest.mark.parametrize(
    ("factory", "odd_shape"),
    [
        (lambda: SVNet(base_channels=4), (1, 1, 17, 30, 23)),
        (lambda: AnatomyNet(widths=(8, 8, 8, 8)), (1, 1, 7, 9, 11)),
    ],
)
def test_internal_padding_equals_padding_by_hand_then_cropping(factory, odd_shape) -> None:
    torch.manual_seed(1)
    model = factory().eval()
    image = torch.randn(odd_shape)
    padded, _ = pad_to_multiple(image, model.size_divisor)
    with torch.no_grad():
        direct = model(image)
        by_hand = model(padded)[:, :, : odd_shape[2], : odd_shape[3], : odd_shape[4]]
    assert torch.equal(direct, by_hand)


@pytest.mark.parametrize(
    ("factory", "bad_shape"),
    [
        (lambda: SVNet(base_channels=4, pad_input=False), (1, 1, 17, 32, 32)),
        (lambda: AnatomyNet(widths=(8, 8, 8, 8), pad_input=False), (1, 1, 7, 8, 8)),
        (lambda: SVNet(base_channels=4), (1, 2, 16, 16, 16)),  # wrong channel count
        (lambda: AnatomyNet(widths=(8, 8, 8, 8)), (1, 16, 16, 16)),  # 4D
    ],
)
def test_unusable_inputs_raise_value_error(factory, bad_shape) -> None:
    with pytest.raises(ValueError):
        factory()(torch.zeros(bad_shape))


def test_channels_last_and_autocast_do_not_break_models() -> None:
    torch.manual_seed(2)
    for model in (SVNet(base_channels=4), VNet(base_channels=4), AnatomyNet(widths=(8, 8, 8, 8))):
        model.eval()
        image = torch.randn(1, 1, 16, 16, 16)
        with torch.no_grad():
            reference = model(image)
            model.to(memory_format=torch.channels_last_3d)
            channels_last = model(image.to(memory_format=torch.channels_last_3d))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                mixed = model(image)
        assert torch.allclose(channels_last, reference, atol=1e-4, rtol=1e-4)
        assert mixed.shape == reference.shape and torch.isfinite(mixed).all()


# ---------------------------------------------------------------- training essentials
@pytest.mark.parametrize(
    "factory",
    [lambda: SVNet(base_channels=4), lambda: VNet(base_channels=4), lambda: AnatomyNet(widths=(8, 8, 8, 8))],
)
def test_gradient_reaches_every_parameter(factory) -> None:
    torch.manual_seed(3)
    model = factory().train()
    image = torch.randn(2, 1, 16, 16, 16)
    target = torch.randint(0, model.out_channels, (2, 16, 16, 16))
    loss = torch.nn.functional.cross_entropy(model(image), target)
    loss.backward()
    missing = [
        name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert not missing
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))
    assert first_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("factory", [lambda: SVNet(base_channels=4), lambda: AnatomyNet(widths=(8, 8, 8, 8))])
def test_state_dict_round_trip_gives_identical_eval_output(factory) -> None:
    torch.manual_seed(4)
    model = factory().train()
    with torch.no_grad():  # move BN running statistics away from their initial values
        model(torch.randn(2, 1, 16, 16, 16) * 2 + 1)
    model.eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(5)
    restored = factory()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    restored.eval()
    image = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(image), restored(image))
        assert not torch.equal(factory().eval()(image), model(image))  # a fresh model really differs


# ---------------------------------------------------------------- factory
def test_build_model_builds_each_architecture_by_name() -> None:
    assert set(ARCHITECTURES) == {"svnet", "vnet", "anatomynet"}
    assert isinstance(build_model("svnet", 1, 6, base_channels=4), SVNet)
    assert isinstance(build_model("VNet", 1, 6, base_channels=4), VNet)
    model = build_model(" anatomynet ", 1, 8, widths=(8, 8, 8, 8))
    assert isinstance(model, AnatomyNet) and model.out_channels == 8


def test_build_model_unknown_architecture_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="anatomynet.*svnet.*vnet"):
        build_model("unet", 1, 2)


@pytest.mark.parametrize(
    ("architecture", "params", "message"),
    [
        ("svnet", {"width": 8}, "no parameter"),
        ("svnet", {"base_channels": 0}, "base_channels"),
        ("vnet", {"kernel_size": 4}, "odd"),
        ("vnet", {"activation": "gelu"}, "activation"),
        ("anatomynet", {"widths": (8, 8, 8)}, "widths"),
        ("anatomynet", {"se_reduction": 0}, "se_reduction"),
    ],
)
def test_build_model_rejects_bad_parameters(architecture, params, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(architecture, 1, 6, **params)


def test_too_many_input_channels_for_first_stage_is_rejected() -> None:
    with pytest.raises(ValueError, match="base_channels"):
        build_model("svnet", 8, 6, base_channels=4)


def test_vnet_at_seed_000_parameter_budget():
    """The SV-net paper quotes 9.6 M for its V-Net baseline; the narrower faithful V-Net matches that budget."""
    from headseg.models import build_model, count_parameters
    from headseg.models.vnet import VNet

    model = build_model("vnet", 1, 6, **VNet.PAPER_BUDGET_PARAMS)
    assert abs(count_parameters(model) - 9.6e6) / 9.6e6 < 0.05
