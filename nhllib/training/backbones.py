"""Feature extractors: ``build_backbone(name) -> nn.Module`` whose forward returns (B, ``out_features``).

``BACKBONES`` maps each name to its builder (the only place a backbone name becomes code):

- ``"cnn"``: :class:`SmallCNN`, three conv-BN-ReLU-maxpool blocks then global average pooling;
  ``out_features`` is the last width (no projection: the hash layer is the projection).
- ``"mlp"``: :class:`MLP`, flatten -> 512 -> 512 with ReLU.
- ``"resnet18"``, ``"resnet50"``, ``"alexnet"``, ``"vgg16"``, ``"vit_b_16"``: torchvision models with the
  classification head removed (ResNet ``fc`` and ViT ``heads`` become ``Identity``; AlexNet/VGG keep fc6/fc7 and
  drop the last Linear); ``out_features`` is read from the model.

Grayscale input (``in_channels=1``) to the torchvision models is repeated to 3 channels in ``forward``, so an
ImageNet-pretrained first layer sees the same value in R, G and B.

``pretrained=True`` loads torchvision's ``IMAGENET1K_V1`` weights, the ones the reference's ``pretrained=True``
loaded (for ResNet-50 torchvision's DEFAULT is the newer V2; pass ``weights="DEFAULT"`` or another enum name to
choose). Nothing is ever downloaded silently in place of failing: if the weights cannot be fetched (no
network), a RuntimeError names the file and the folder ``torch.hub.get_dir()/checkpoints`` to put it in.

Width of the small CNN, measured with ``python benchmarks/bench_backbones.py`` (results in
``benchmarks/results/bench_backbones.json``): 2-core AMD EPYC CPU shared with other jobs (rounds varied by up to
2x; medians of 5 interleaved rounds), torch 2.14 on 2 threads, random 28x28 grayscale input; training = batch
64, Adam, forward + backward + step with a 10-way linear head; encoding = eval mode, no_grad, batch 512.

==================  ==============  ===============
backbone            train images/s  encode images/s
==================  ==============  ===============
cnn (16, 32, 64)    ~4,900          ~7,700
cnn (32, 64, 128)   ~1,800          ~3,200
mlp 512-512         ~21,800         ~146,000
==================  ==============  ===============

(The design notes quote about 1,700 and 730 training images/s for the two CNNs on a machine of this kind,
under conditions not recorded; the ratio, about 2.5x, agrees.) The default is (16, 32, 64): 2.5x the training
and 2.4x the encoding throughput of (32, 64, 128), which matters for a study that trains many models on a CPU.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from nhllib.checks import check_positive_int

logger = logging.getLogger(__name__)

DEFAULT_CNN_CHANNELS = (16, 32, 64)
#: Weights loaded by ``pretrained=True`` (the reference's ``pretrained=True`` weights).
DEFAULT_WEIGHTS = "IMAGENET1K_V1"


class SmallCNN(nn.Module):
    """Three conv3x3-BN-ReLU-maxpool2 blocks, then global average pooling: (B, C, H, W) -> (B, channels[-1])."""

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = DEFAULT_CNN_CHANNELS) -> None:
        super().__init__()
        if len(channels) != 3 or any(int(c) < 1 for c in channels):
            raise ValueError(f"channels must be three positive widths, got {tuple(channels)}")
        layers: list[nn.Module] = []
        width = in_channels
        for out in channels:
            layers += [
                nn.Conv2d(width, int(out), kernel_size=3, padding=1, bias=False),  # BN supplies the bias
                nn.BatchNorm2d(int(out)),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            width = int(out)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)


class MLP(nn.Module):
    """Flatten -> Linear-ReLU per hidden width: (B, C, H, W) -> (B, hidden[-1])."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: Sequence[int] = (512, 512)) -> None:
        super().__init__()
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive widths, got {tuple(hidden)}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(inplace=True)]
            width = int(h)
        self.net = nn.Sequential(*layers)
        self.in_shape = (in_channels, image_size, image_size)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"MLP built for inputs {self.in_shape}, got {tuple(x.shape[1:])}")
        return self.net(x)


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier without its last layer; repeats 1-channel input to the 3 channels it expects."""

    def __init__(self, model: nn.Module, out_features: int, in_channels: int) -> None:
        super().__init__()
        self.model = model
        self.out_features = int(out_features)
        self.in_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"backbone built for {self.in_channels} input channels, got {x.shape[1]}")
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.model(x)


# ---------------------------------------------------------------- head removal, one per family


def _strip_fc(model: nn.Module) -> int:
    out = model.fc.in_features
    model.fc = nn.Identity()
    return out


def _strip_last_linear(model: nn.Module) -> int:
    layers = list(model.classifier.children())
    if not isinstance(layers[-1], nn.Linear):
        raise TypeError(f"expected the classifier to end with a Linear layer, got {type(layers[-1]).__name__}")
    model.classifier = nn.Sequential(*layers[:-1])  # keeps fc6/fc7 (+ ReLU, Dropout)
    return layers[-1].in_features


def _strip_vit_heads(model: nn.Module) -> int:
    model.heads = nn.Identity()
    return model.hidden_dim


def _weights_error(name: str, weights: object, exc: Exception) -> RuntimeError:
    url = getattr(weights, "url", "?")
    checkpoints = f"{torch.hub.get_dir()}/checkpoints"
    return RuntimeError(
        f"could not load the pretrained weights {weights} for backbone {name!r} "
        f"({type(exc).__name__}: {exc}). No network? Download {url} elsewhere and place the file "
        f"{url.rsplit('/', 1)[-1]} in {checkpoints}/ (that is $TORCH_HOME/hub/checkpoints/), then retry; "
        f"or build with pretrained=False to train from a random initialisation."
    )


# ---------------------------------------------------------------- the weight file on disk (pre-flight)


@dataclass(frozen=True)
class WeightFile:
    """Where torch.hub keeps one set of torchvision weights, and the SHA-256 prefix its name publishes."""

    backbone: str
    weights: str  # the enum member, e.g. "ResNet50_Weights.IMAGENET1K_V1"
    url: str
    path: Path

    @property
    def hash_prefix(self) -> str:
        # torchvision names its files <name>-<first hex digits of the SHA-256>.pth (torch.hub's HASH_REGEX)
        match = re.search(r"-([a-f0-9]+)\.", self.path.name)
        return match.group(1) if match else ""


def pretrained_weight_file(name: str, weights: str | None = None) -> WeightFile | None:
    """The weight file ``build_backbone(name, pretrained=True)`` loads, or None for a backbone without any."""
    builder = BACKBONES.get(name)
    if not (isinstance(builder, partial) and builder.func is _torchvision_backbone):
        return None
    from torchvision import models

    chosen = models.get_model_weights(name).verify(weights or DEFAULT_WEIGHTS)
    filename = chosen.url.rsplit("/", 1)[-1]
    return WeightFile(name, str(chosen), chosen.url, Path(torch.hub.get_dir()) / "checkpoints" / filename)


def check_weight_file(file: WeightFile, chunk: int = 1 << 20) -> None:
    """Raise ValueError unless ``file.path``'s SHA-256 starts with the prefix its name publishes.

    torch.hub checks the hash only when it downloads; a file placed by hand is otherwise loaded as it is.
    """
    if not file.hash_prefix:
        return
    digest = hashlib.sha256()
    with open(file.path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    if not digest.hexdigest().startswith(file.hash_prefix):
        raise ValueError(
            f"{file.path} is not the {file.weights} file: its SHA-256 begins {digest.hexdigest()[:len(file.hash_prefix)]}"
            f", but torchvision publishes {file.hash_prefix} in the file name. Replace it with the file from "
            f"{file.url}"
        )


def _torchvision_backbone(
    name: str,
    strip_head: Callable[[nn.Module], int],
    pretrained: bool = False,
    in_channels: int = 3,
    image_size: int = 224,
    weights: str | None = None,
    takes_image_size: bool = False,
) -> nn.Module:
    from torchvision import models

    if in_channels not in (1, 3):
        raise ValueError(f"backbone {name!r} takes in_channels 1 (repeated to RGB) or 3, got {in_channels}")
    chosen = None
    if pretrained or weights is not None:
        enum = models.get_model_weights(name)
        try:
            chosen = enum.verify(weights or DEFAULT_WEIGHTS)
        except KeyError:
            raise ValueError(
                f"unknown weights {weights!r} for {name!r}; valid: DEFAULT, {', '.join(enum.__members__)}"
            ) from None
    kwargs = {}
    if takes_image_size:  # ViT's position embeddings fix its input size
        native = chosen.meta["min_size"][0] if chosen is not None else None
        if native is not None and image_size != native:
            raise ValueError(f"pretrained {name!r} weights need image_size={native}, got {image_size}")
        kwargs["image_size"] = image_size
    try:
        model = models.get_model(name, weights=None, **kwargs)
    except AssertionError as exc:  # torchvision's torch._assert, e.g. ViT's patch-size divisibility
        raise ValueError(f"cannot build {name!r} for image_size={image_size}: {exc}") from exc
    if chosen is not None:
        try:
            # Looked up at call time so the download function can be replaced (tests, offline mirrors).
            cached = pretrained_weight_file(name, weights)
            if cached is not None and cached.path.is_file():
                check_weight_file(cached)  # torch.hub would load a wrong file under this name unchecked
            state = torch.hub.load_state_dict_from_url(chosen.url, progress=False, check_hash=True)
            model.load_state_dict(state)
        except Exception as exc:
            raise _weights_error(name, chosen, exc) from exc
        logger.info("loaded %s weights for %s", chosen, name)
    out_features = strip_head(model)
    return TorchvisionBackbone(model, out_features, in_channels)


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"backbone {name!r} has no pretrained weights; use pretrained=False")


def _build_cnn(pretrained: bool = False, in_channels: int = 1, image_size: int = 28,
               channels: Sequence[int] = DEFAULT_CNN_CHANNELS) -> nn.Module:
    _no_pretrained("cnn", pretrained)
    if image_size < 8:
        raise ValueError(f"the 'cnn' backbone pools three times and needs image_size >= 8, got {image_size}")
    return SmallCNN(in_channels, channels)


def _build_mlp(pretrained: bool = False, in_channels: int = 1, image_size: int = 28,
               hidden: Sequence[int] = (512, 512)) -> nn.Module:
    _no_pretrained("mlp", pretrained)
    return MLP(in_channels, image_size, hidden)


#: Backbone name -> builder ``(pretrained, in_channels, image_size, **options) -> nn.Module``.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "cnn": _build_cnn,
    "mlp": _build_mlp,
    "resnet18": partial(_torchvision_backbone, "resnet18", _strip_fc),
    "resnet50": partial(_torchvision_backbone, "resnet50", _strip_fc),
    "alexnet": partial(_torchvision_backbone, "alexnet", _strip_last_linear),
    "vgg16": partial(_torchvision_backbone, "vgg16", _strip_last_linear),
    "vit_b_16": partial(_torchvision_backbone, "vit_b_16", _strip_vit_heads, takes_image_size=True),
}


def build_backbone(name: str, pretrained: bool = False, in_channels: int = 1, image_size: int = 28,
                   **options) -> nn.Module:
    """Build a feature extractor with an ``out_features`` attribute.

    Parameters
    ----------
    name
        A key of :data:`BACKBONES`.
    pretrained
        Load ImageNet weights (torchvision models only); fails loudly if they are unavailable.
    in_channels
        Input channels (1 for Fashion-MNIST; torchvision models repeat it to 3).
    image_size
        Input side length (used by ``cnn`` for a check, ``mlp`` for its input width, ``vit_b_16`` for its
        position embeddings, a multiple of 16).
    **options
        Builder-specific: ``channels`` (cnn), ``hidden`` (mlp), ``weights`` (torchvision enum name).

    Raises
    ------
    KeyError
        For an unknown name (the message lists the valid ones).
    """
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(BACKBONES))}")
    check_positive_int("in_channels", in_channels)
    check_positive_int("image_size", image_size)
    model = BACKBONES[name](pretrained=pretrained, in_channels=in_channels, image_size=image_size, **options)
    logger.debug("built backbone %s: out_features=%d", name, model.out_features)
    return model
