import pytest
import torch

from nhllib.core.nested import NestedHashLayer, SeparateHashHeads


def test_prefix_property_and_shapes():
    torch.manual_seed(0)
    layer = NestedHashLayer(16, (4, 8, 16))
    with torch.no_grad():
        layer.linear.bias.normal_()  # a non-zero bias must be sliced like the weight
    codes = layer(torch.randn(8, 16))
    assert [c.shape for c in codes] == [(8, 4), (8, 8), (8, 16)]
    for code in codes:
        assert torch.equal(code, codes[-1][:, : code.shape[1]])
    # the k-th code is exactly the first L_k rows of the one linear map
    x = torch.randn(3, 16)
    manual = x @ layer.linear.weight[:8].T + layer.linear.bias[:8]
    assert torch.allclose(layer(x)[1], manual)


def test_initialisation_matches_reference():
    torch.manual_seed(0)
    layer = NestedHashLayer(512, (8, 16, 32, 64, 128))
    assert layer.shared_weight.shape == (128, 512)
    assert torch.count_nonzero(layer.linear.bias) == 0
    assert abs(layer.shared_weight.std().item() - 0.01) < 0.001


@pytest.mark.parametrize(
    "lengths, message",
    [((8, 8, 16), "strictly increasing"), ((16, 8), "strictly increasing"), ((), "at least one"),
     ((8, 0), "positive"), ((8, 16.0), "positive ints"), ((8, -16), "positive")],
)
def test_bad_code_lengths(lengths, message):
    with pytest.raises(ValueError, match=message):
        NestedHashLayer(16, lengths)


def test_bad_in_features_and_feature_width():
    with pytest.raises(ValueError, match="in_features"):
        NestedHashLayer(0, (8,))
    layer = NestedHashLayer(16, (8,))
    with pytest.raises(ValueError, match=r"\(batch, 16\)"):
        layer(torch.randn(2, 15))


def test_separate_heads_are_independent():
    torch.manual_seed(0)
    heads = SeparateHashHeads(16, (4, 8))
    codes = heads(torch.randn(5, 16))
    assert [c.shape for c in codes] == [(5, 4), (5, 8)]
    assert not torch.allclose(codes[0], codes[1][:, :4])


# ---------------------------------------------------------------- code centring (issue #9)

def _centred_oracle(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return (x - mean) / torch.sqrt(var + 1e-5)


def test_centring_is_per_unit_and_keeps_the_prefix_property():
    torch.manual_seed(0)
    layer = NestedHashLayer(16, (4, 8, 16), center=True)
    with torch.no_grad():
        layer.linear.bias.normal_(3.0)  # an offset that centring must remove
    x = torch.randn(32, 16)
    codes = layer(x)
    assert [c.shape for c in codes] == [(32, 4), (32, 8), (32, 16)]
    raw = layer.linear(x)
    expected = _centred_oracle(raw, raw.mean(0), raw.var(0, unbiased=False))
    torch.testing.assert_close(codes[-1], expected, rtol=1e-4, atol=1e-5)
    for code in codes:
        assert torch.equal(code, codes[-1][:, :code.shape[1]])
    # the same unit is centred alike in a one-length model (the `separate` variant) and in the nested layer
    alone = NestedHashLayer(16, (4,), center=True).double()
    with torch.no_grad():
        alone.linear.weight.copy_(layer.linear.weight[:4])
        alone.linear.bias.copy_(layer.linear.bias[:4])
    torch.testing.assert_close(alone(x.double())[0], layer.double()(x.double())[0], rtol=1e-12, atol=1e-12)


def test_centring_uses_running_statistics_in_eval():
    torch.manual_seed(1)
    layer = NestedHashLayer(16, (4, 8), center=True)
    x = torch.randn(32, 16)
    raw = layer.linear(x).detach()
    layer(x)  # one training step of the running statistics (momentum 0.1)
    running_mean = 0.1 * raw.mean(0)
    running_var = 0.9 + 0.1 * raw.var(0, unbiased=True)
    torch.testing.assert_close(layer.norm.running_mean, running_mean)
    layer.eval()
    x2 = torch.randn(5, 16)
    codes = layer(x2)
    torch.testing.assert_close(codes[-1], _centred_oracle(layer.linear(x2), running_mean, running_var))
    assert torch.equal(codes[0], codes[-1][:, :4])
    torch.testing.assert_close(layer(x2[:1])[0], codes[0][:1])  # eval does not depend on the rest of the batch


def test_separate_heads_centre_each_head():
    torch.manual_seed(2)
    heads = SeparateHashHeads(16, (4, 8), center=True)
    x = torch.randn(20, 16)
    codes = heads(x)
    assert [c.shape for c in codes] == [(20, 4), (20, 8)]
    for head, code in zip(heads.heads, codes):
        raw = head(x)
        torch.testing.assert_close(code, _centred_oracle(raw, raw.mean(0), raw.var(0, unbiased=False)),
                                   rtol=1e-4, atol=1e-5)


def test_centring_off_by_default_and_checked():
    layer, heads = NestedHashLayer(16, (4, 8)), SeparateHashHeads(16, (4, 8))
    assert layer.norm is None and heads.norms is None
    assert set(layer.state_dict()) == {"linear.weight", "linear.bias"}
    assert "center=True" in repr(NestedHashLayer(16, (4,), center=True))
    with pytest.raises(TypeError, match="center must be a bool"):
        NestedHashLayer(16, (4,), center="yes")
    with pytest.raises(TypeError, match="center must be a bool"):
        SeparateHashHeads(16, (4,), center=1)
