import pytest
import torch

from rlhand.core.masked import explained_variance, masked_mean, masked_sum, masked_var, masked_whiten

X = torch.tensor([2.0, 4.0, 6.0, 100.0], dtype=torch.float64)
M = torch.tensor([1, 1, 1, 0])


def test_masked_mean_ignores_pad():
    # (2 + 4 + 6) / 3 = 4; the naive x.sum() / mask.sum() would give 112 / 3 = 37.33.
    assert masked_mean(X, M).item() == pytest.approx(4.0)


def test_masked_var_biased_and_unbiased():
    # squared deviations 4, 0, 4 -> 8 / 3 biased, 8 / 2 unbiased.
    assert masked_var(X, M, unbiased=False).item() == pytest.approx(8 / 3)
    assert masked_var(X, M, unbiased=True).item() == pytest.approx(4.0)


def test_masked_var_guards_tiny_masks():
    with pytest.raises(ValueError):
        masked_var(X, torch.tensor([1, 0, 0, 0]))
    with pytest.raises(ValueError):
        masked_var(X, torch.zeros(4))


def test_whiten_unbiased_convention_and_pads_zero():
    out = masked_whiten(X, M)
    assert torch.allclose(out[:3], torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64), atol=1e-7)
    assert out[3] == 0
    kept = masked_whiten(X, M, shift_mean=False)
    assert torch.allclose(kept[:3], torch.tensor([3.0, 4.0, 5.0], dtype=torch.float64), atol=1e-7)


def test_whiten_gives_zero_mean_unit_std_on_random_data():
    torch.manual_seed(0)
    x = torch.randn(8, 10, dtype=torch.float64) * 3 + 2
    mask = (torch.rand(8, 10) > 0.3).long()
    out = masked_whiten(x, mask)
    assert abs(masked_mean(out, mask).item()) < 1e-6
    assert abs(masked_var(out, mask).sqrt().item() - 1) < 1e-4
    assert (out[mask == 0] == 0).all()


def test_masked_sum_does_not_leak_nan_from_pads():
    x = torch.tensor([1.0, float("nan")])
    assert masked_sum(x, torch.tensor([1, 0])).item() == 1.0


def test_explained_variance_perfect_and_constant():
    returns = torch.tensor([[1.0, 2.0, 3.0]])
    mask = torch.ones(1, 3)
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    # predicting the mean explains nothing
    assert explained_variance(torch.full((1, 3), 2.0), returns, mask).item() == pytest.approx(0.0)
