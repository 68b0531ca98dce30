"""Tests for nhllib.training.backbones: every registered backbone, the channel repeat, and the offline-weights error."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from nhllib.training.backbones import BACKBONES, SmallCNN, build_backbone

# Smallest convenient input side per backbone (AlexNet's pooling needs ~64 px; ViT takes any multiple of 16).
TEST_SIZES = {"cnn": 28, "mlp": 28, "resnet18": 32, "resnet50": 32, "alexnet": 64, "vgg16": 32, "vit_b_16": 32}


def test_every_registered_backbone_has_a_test_size():
    assert set(TEST_SIZES) == set(BACKBONES)


@pytest.fixture(scope="module")
def grayscale_models():
    """Each backbone built once (random init, in_channels=1): large torchvision models take seconds to build."""
    torch.manual_seed(0)
    return {name: build_backbone(name, in_channels=1, image_size=size).eval() for name, size in TEST_SIZES.items()}


@pytest.mark.parametrize("name", sorted(TEST_SIZES))
def test_backbone_forward_shape(grayscale_models, name):
    model, size = grayscale_models[name], TEST_SIZES[name]
    assert isinstance(model.out_features, int) and model.out_features > 0
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, model.out_features)
    assert torch.isfinite(out).all()
    assert model.out_features != 1000  # the 1000-way ImageNet head is gone


@pytest.mark.parametrize("name", ["cnn", "mlp", "resnet18"])
def test_backbone_forward_rgb(name):
    size = TEST_SIZES[name]
    model = build_backbone(name, in_channels=3, image_size=size).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, model.out_features)


def test_torchvision_out_features_read_from_the_model(grayscale_models):
    # Independent oracle: the width of the layer that fed the removed head, read from a fresh torchvision model.
    from torchvision import models

    assert grayscale_models["resnet18"].out_features == models.resnet18().fc.in_features
    assert grayscale_models["resnet50"].out_features == models.resnet50().fc.in_features
    assert grayscale_models["alexnet"].out_features == models.alexnet().classifier[-1].in_features
    assert grayscale_models["vit_b_16"].out_features == models.vit_b_16(image_size=32).hidden_dim


def test_grayscale_is_repeated_to_rgb(grayscale_models):
    model = grayscale_models["resnet18"]
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), model.model(x.repeat(1, 3, 1, 1)))
        with pytest.raises(ValueError, match="1 input channels"):
            model(torch.randn(2, 3, 32, 32))


def test_alexnet_and_vgg_keep_fc6_fc7(grayscale_models):
    for name in ("alexnet", "vgg16"):
        model = grayscale_models[name]
        linears = [m for m in model.model.classifier if isinstance(m, nn.Linear)]
        assert len(linears) == 2 and linears[-1].out_features == model.out_features


def test_small_cnn_structure_and_gradients():
    model = build_backbone("cnn", in_channels=1, image_size=28, channels=(4, 6, 8))
    assert model.out_features == 8
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 6, 8]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    out = model(torch.randn(3, 1, 28, 28))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert build_backbone("cnn", in_channels=3, image_size=8)(torch.randn(2, 3, 8, 8)).shape == (2, 64)
    assert build_backbone("cnn").out_features == SmallCNN().out_features == 64


def test_small_cnn_and_mlp_reject_bad_input():
    with pytest.raises(ValueError, match="image_size >= 8"):
        build_backbone("cnn", image_size=7)
    with pytest.raises(ValueError, match="three positive widths"):
        build_backbone("cnn", channels=(8, 16))
    mlp = build_backbone("mlp", in_channels=1, image_size=28)
    assert mlp.out_features == 512
    with pytest.raises(ValueError, match=r"\(1, 28, 28\)"):
        mlp(torch.randn(2, 1, 32, 32))


def test_build_backbone_rejects_bad_names_and_options():
    with pytest.raises(KeyError, match="cnn.*resnet50"):
        build_backbone("resnet34")
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_backbone("cnn", pretrained=True)
    with pytest.raises(ValueError, match="in_channels 1 .* or 3"):
        build_backbone("resnet18", in_channels=4)
    with pytest.raises(ValueError, match="image_size=28"):
        build_backbone("vit_b_16", image_size=28)  # not a multiple of the patch size
    with pytest.raises(ValueError, match="unknown weights"):
        build_backbone("resnet18", weights="IMAGENET9K")


def test_pretrained_vit_needs_its_native_size():
    with pytest.raises(ValueError, match="image_size=224"):
        build_backbone("vit_b_16", pretrained=True, in_channels=3, image_size=32)


def test_missing_pretrained_weights_raise_helpful_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("simulated: no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as info:
        build_backbone("resnet18", pretrained=True, in_channels=3, image_size=32)
    message = str(info.value)
    assert len(calls) == 1
    filename = calls[0].rsplit("/", 1)[-1]
    assert filename.endswith(".pth") and filename in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "simulated: no network" in message and "IMAGENET1K_V1" in message


def test_pretrained_weights_are_loaded_then_head_removed(monkeypatch):
    from torchvision import models

    torch.manual_seed(1)
    reference = models.resnet18()
    served = []

    def serve(url, *args, **kwargs):
        served.append(url)
        return reference.state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", serve)
    model = build_backbone("resnet18", pretrained=True, in_channels=3, image_size=32)
    assert served == [models.ResNet18_Weights.IMAGENET1K_V1.url]
    assert torch.equal(model.model.conv1.weight, reference.conv1.weight)
    assert isinstance(model.model.fc, nn.Identity)
    reference.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), reference.eval()(x))
