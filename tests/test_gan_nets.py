"""Shapes of every GAN network, conditioning, spectral norm."""

from __future__ import annotations

import torch

from metagan.gan.dagan import PairGenerator, first_of_each_class
from metagan.gan.nets import Discriminator, Generator, SetEncoder


def test_generator_shapes_and_range() -> None:
    g = Generator(z_dim=16, width=8)
    x = g(torch.randn(5, 16))
    assert x.shape == (5, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    gc = Generator(z_dim=16, cond_dim=10, width=8)
    assert gc(torch.randn(5, 16), torch.randn(5, 10)).shape == (5, 1, 28, 28)


def test_discriminator_shapes_conditioned_and_spectral() -> None:
    d = Discriminator(width=8)
    assert d(torch.rand(6, 1, 28, 28)).shape == (6,)
    dc = Discriminator(cond_dim=10, width=8, spectral=True)
    x, c = torch.rand(6, 1, 28, 28), torch.randn(6, 10)
    assert dc(x, c).shape == (6,)
    # The projection term makes the score depend on the condition.
    assert not torch.allclose(dc(x, c), dc(x, torch.randn(6, 10)))
    assert any("parametrizations" in name for name, _ in dc.named_parameters())
    pair = Discriminator(width=8, image_channels=2)
    assert pair(torch.rand(3, 2, 28, 28)).shape == (3,)


def test_set_encoder_and_pair_generator() -> None:
    enc = SetEncoder(dim=12, width=8)
    sets = torch.rand(4, 5, 1, 28, 28)
    assert enc(sets).shape == (4, 12)
    # A set's encoding does not depend on the order of its images.
    torch.testing.assert_close(enc(sets), enc(sets.flip(1)))
    g = PairGenerator(z_dim=8, width=8)
    assert g(torch.rand(7, 1, 28, 28), torch.randn(7, 8)).shape == (7, 1, 28, 28)


def test_first_of_each_class() -> None:
    x = torch.arange(2 * 6).float().view(2, 6, 1)
    y = torch.tensor([[2, 0, 1, 0, 1, 2], [1, 1, 0, 2, 0, 2]])
    out = first_of_each_class(x, y, 3)
    assert out.squeeze(-1).tolist() == [[1.0, 2.0, 0.0], [8.0, 6.0, 9.0]]
