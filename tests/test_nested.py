import pytest
import torch

from nhllib.nested import NestedHashLayer, SeparateHashHeads


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
