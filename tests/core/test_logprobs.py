"""Chunked log-probs and entropies through the output layer equal the plain computation."""

import pytest
import torch
import torch.nn.functional as F

from rlhand.core.logprobs import chunk_rows, token_logprobs_entropy


def plain(h, w, b, tokens, temperature):
    """The computation of the whole (N, V) logits, as the trainer did before chunking."""
    z = F.linear(h, w, b).float() / temperature
    lse = torch.logsumexp(z, dim=-1)
    logprobs = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse
    return logprobs, lse - (torch.softmax(z, dim=-1) * z).sum(dim=-1)


def leaves(n=37, d=16, v=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(n, d, generator=g) / d**0.5).requires_grad_()
    w = torch.randn(v, d, generator=g).requires_grad_()
    b = torch.randn(v, generator=g).requires_grad_()
    return h, w, b, torch.randint(0, v, (n,), generator=g), torch.randn(n, generator=g), torch.randn(n, generator=g)


@pytest.mark.parametrize("chunk", [37, 8, 5, 1])
@pytest.mark.parametrize("entropy_grad", [False, True])
def test_chunked_values_and_gradients_equal_the_whole_logits(chunk, entropy_grad):
    h, w, b, tokens, g_lp, g_ent = leaves()
    ref_lp, ref_ent = plain(h, w, b, tokens, 0.7)
    ref = torch.autograd.grad((ref_lp * g_lp).sum() + entropy_grad * (ref_ent * g_ent).sum(), (h, w, b))
    lp, ent = token_logprobs_entropy(h, w, b, tokens, 0.7, chunk=chunk, entropy=True, entropy_grad=entropy_grad)
    torch.testing.assert_close(lp, ref_lp, rtol=0, atol=1e-6)
    torch.testing.assert_close(ent, ref_ent, rtol=0, atol=1e-6)
    loss = (lp * g_lp).sum() + ((ent * g_ent).sum() if entropy_grad else 0)
    for got, want in zip(torch.autograd.grad(loss, (h, w, b)), ref):
        # float32 sums in another order: equal to 1e-6 of the gradient's scale (the plain path is
        # itself ~2e-7 of it away from a float64 computation)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6 * want.abs().max().item())
    assert ent.requires_grad == entropy_grad


def test_one_chunk_is_the_plain_computation_bit_for_bit():
    h, w, b, tokens, g_lp, _ = leaves()
    ref_lp, ref_ent = plain(h, w, b, tokens, 1.3)
    lp, ent = token_logprobs_entropy(h, w, b, tokens, 1.3, chunk=len(h), entropy=True)
    assert torch.equal(lp, ref_lp) and torch.equal(ent, ref_ent)
    (ref_grad,) = torch.autograd.grad((ref_lp * g_lp).sum(), (w,))
    (grad,) = torch.autograd.grad((lp * g_lp).sum(), (w,))
    assert torch.equal(grad, ref_grad)


def test_hand_values():
    """One position, logits [0, ln 3] at temperature 1: p = [1/4, 3/4]."""
    h = torch.tensor([[1.0]])
    w = torch.tensor([[0.0], [torch.log(torch.tensor(3.0)).item()]], requires_grad=True)
    lp, ent = token_logprobs_entropy(h, w, None, torch.tensor([1]), 1.0, chunk=1, entropy=True, entropy_grad=True)
    assert lp.item() == pytest.approx(torch.log(torch.tensor(0.75)).item(), abs=1e-7)
    assert ent.item() == pytest.approx(-(0.25 * torch.log(torch.tensor(0.25)) + 0.75 * torch.log(torch.tensor(0.75))).item(), abs=1e-7)
    # d logp / dz = onehot - p = [-1/4, 1/4]; dz/dw = h = 1
    (grad,) = torch.autograd.grad(lp.sum(), w)
    torch.testing.assert_close(grad, torch.tensor([[-0.25], [0.25]]))


def test_without_entropy_no_entropy_is_computed():
    h, w, b, tokens, *_ = leaves()
    lp, ent = token_logprobs_entropy(h, w, b, tokens, 1.0, chunk=4, entropy=False)
    assert ent is None and lp.shape == (len(h),)


def test_bf16_autocast_runs_the_output_layer_in_bf16():
    h, w, b, tokens, g_lp, _ = leaves(v=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_lp, _ = plain(h, w, b, tokens, 1.0)
        lp, _ = token_logprobs_entropy(h, w, b, tokens, 1.0, chunk=5, entropy=False)
    torch.testing.assert_close(lp, ref_lp, rtol=0, atol=1e-6)  # the same bf16 logits, chunk by chunk
    (ref_grad,) = torch.autograd.grad((ref_lp * g_lp).sum(), (h,))
    (grad,) = torch.autograd.grad((lp * g_lp).sum(), (h,))
    torch.testing.assert_close(grad, ref_grad, rtol=0.02, atol=1e-3)  # bf16 products, other accumulation order
    assert grad.dtype == h.dtype


def test_chunk_rows_from_a_byte_budget():
    assert chunk_rows(151_936, 256 * 2**20, 10_000) == 441
    assert chunk_rows(100, 256 * 2**20, 1000) == 1000  # all of them
    assert chunk_rows(151_936, 1, 50) == 1  # never 0
    assert chunk_rows(151_936, None, 50) == 50
