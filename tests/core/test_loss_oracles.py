"""The losses reformulated for speed (issue 23) against their pre-change implementations, in float64.

``tests/core/reference_losses.py`` holds the code as it was: DTSH over a dense (B, B, B) triplet tensor and the
memory-bank losses' pair terms under autograd. Values and every length's gradient must agree, for one length
and for K nested lengths, on batches with valid pairs and triplets and on batches without any.
"""

from __future__ import annotations

import pytest
import torch

from nhllib.core.losses import build_loss, build_losses, per_length_losses

import reference_losses as ref

LENGTHS = (4, 8, 16)
NUM_CLASSES = 5
NUM_TRAIN = 40
BANK = ("dhn", "dbdh", "dsh")
TOL = dict(rtol=1e-10, atol=1e-12)


def _labels(kind: str, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Multi-hot labels: ``mixed`` (single labels of several classes, some multi-label rows), ``one_class``
    (every row the same class: no negatives, so no valid triplet and every pair similar), ``no_label`` (empty
    rows: no positives, no similar pair)."""
    y = torch.zeros(batch, NUM_CLASSES, dtype=torch.float64)
    if kind == "mixed":
        y[torch.arange(batch), torch.randint(0, NUM_CLASSES, (batch,), generator=generator)] = 1
        y[: batch // 3, (torch.arange(batch // 3) + 1) % NUM_CLASSES] = 1
    elif kind == "one_class":
        y[:, 2] = 1
    return y


def _codes(batch: int, width: int, generator: torch.Generator) -> torch.Tensor:
    u = torch.randn(batch, width, generator=generator, dtype=torch.float64) * 1.5
    u[0] = 0.0  # a zero code: every inner product of it is exactly 0, where the pair terms have a kink
    # a binary code: its distance to its own bank row is exactly 0, the distance clamp's bound
    if batch > 1:
        u[1] = torch.where(torch.arange(width) % 3 == 0, -1.0, 1.0)
    return u


def _grads(values: torch.Tensor, leaf: torch.Tensor) -> list[torch.Tensor]:
    return [torch.autograd.grad(values[k], leaf, retain_graph=True)[0] for k in range(values.shape[0])]


# ---------------------------------------------------------------- DTSH

@pytest.mark.parametrize("labels", ["mixed", "one_class", "no_label"])
@pytest.mark.parametrize("batch", [9, 1])
def test_dtsh_single_length_equals_the_dense_triplet_tensor(labels, batch):
    g = torch.Generator().manual_seed(1)
    y = _labels(labels, batch, g)
    u = _codes(batch, 8, g).requires_grad_(True)
    loss = build_loss("dtsh", 8, NUM_CLASSES, NUM_TRAIN, alpha=1.5, lam=0.3).double()
    index = torch.arange(batch)
    value = loss(u, y, index)
    expected = ref.dtsh_loss(u, y, alpha=1.5, lam=0.3)
    torch.testing.assert_close(value, expected, **TOL)
    grad, = torch.autograd.grad(value, u)
    expected_grad, = torch.autograd.grad(expected, u)
    torch.testing.assert_close(grad, expected_grad, **TOL)


@pytest.mark.parametrize("labels", ["mixed", "one_class"])
def test_dtsh_nested_equals_the_dense_triplet_tensor_length_by_length(labels):
    g = torch.Generator().manual_seed(2)
    batch = 11
    y = _labels(labels, batch, g)
    leaf = _codes(batch, LENGTHS[-1], g).requires_grad_(True)
    losses = [loss.double() for loss in build_losses("dtsh", LENGTHS, NUM_CLASSES, NUM_TRAIN, nested=True)]
    values = per_length_losses(losses, [leaf[:, :n] for n in LENGTHS], y, torch.arange(batch))
    expected = torch.stack([ref.dtsh_loss(leaf[:, :n], y) for n in LENGTHS])
    torch.testing.assert_close(values, expected, **TOL)
    for grad, expected_grad in zip(_grads(values, leaf), _grads(expected, leaf)):
        torch.testing.assert_close(grad, expected_grad, **TOL)


# ---------------------------------------------------------------- memory-bank losses

def _filled_bank(loss, generator: torch.Generator, visited: int) -> None:
    """Random codes and labels in the first ``visited`` rows of the bank; the rest stay unvisited (zero)."""
    owner = loss.bank_owner
    owner.U[:visited] = torch.randn(visited, owner.U.shape[1], generator=generator, dtype=owner.U.dtype)
    owner.Y[:visited] = _labels("mixed", visited, generator)


@pytest.mark.parametrize("labels", ["mixed", "one_class", "no_label"])
@pytest.mark.parametrize("name", BANK)
def test_bank_loss_single_length_equals_the_autograd_pair_terms(name, labels):
    g = torch.Generator().manual_seed(3)
    batch = 7
    loss = build_loss(name, 8, NUM_CLASSES, NUM_TRAIN).double().train()
    _filled_bank(loss, g, visited=25)
    y = _labels(labels, batch, g)
    u = _codes(batch, 8, g).requires_grad_(True)
    index = torch.randperm(NUM_TRAIN, generator=g)[:batch]
    value = loss(u, y, index)  # writes the batch into the bank, as the reference's caller did first
    expected = ref.bank_loss(name, u, y, loss.U, loss.Y)
    torch.testing.assert_close(value, expected, **TOL)
    grad, = torch.autograd.grad(value, u)
    expected_grad, = torch.autograd.grad(expected, u)
    torch.testing.assert_close(grad, expected_grad, **TOL)


@pytest.mark.parametrize("labels", ["mixed", "no_label"])
@pytest.mark.parametrize("name", BANK)
def test_bank_loss_nested_equals_the_autograd_pair_terms_length_by_length(name, labels):
    g = torch.Generator().manual_seed(4)
    batch = 6
    losses = [loss.double().train() for loss in build_losses(name, LENGTHS, NUM_CLASSES, NUM_TRAIN, nested=True)]
    _filled_bank(losses[-1], g, visited=30)
    y = _labels(labels, batch, g)
    leaf = _codes(batch, LENGTHS[-1], g).requires_grad_(True)
    index = torch.randperm(NUM_TRAIN, generator=g)[:batch]
    values = per_length_losses(losses, [leaf[:, :n] for n in LENGTHS], y, index)
    bank_u, bank_y = losses[-1].U, losses[-1].Y
    expected = torch.stack([ref.bank_loss(name, leaf[:, :n], y, bank_u[:, :n], bank_y, m=getattr(losses[k], "m", None))
                            for k, n in enumerate(LENGTHS)])
    torch.testing.assert_close(values, expected, **TOL)
    for grad, expected_grad in zip(_grads(values, leaf), _grads(expected, leaf)):
        torch.testing.assert_close(grad, expected_grad, **TOL)


@pytest.mark.parametrize("name", BANK)
def test_bank_loss_in_float32_stays_within_rounding_of_the_reference(name):
    g = torch.Generator().manual_seed(5)
    loss = build_loss(name, 16, NUM_CLASSES, NUM_TRAIN).train()
    _filled_bank(loss, g, visited=NUM_TRAIN)
    y = _labels("mixed", 8, g).float()
    u = _codes(8, 16, g).float().requires_grad_(True)
    value = loss(u, y, torch.arange(8))
    expected = ref.bank_loss(name, u, y, loss.U, loss.Y)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(value, u)[0], torch.autograd.grad(expected, u)[0],
                               rtol=1e-4, atol=1e-6)
