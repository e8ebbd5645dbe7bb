"""Agreement with a line-by-line transcription of the IST-DASLab reference loops (gptq.py's
``fasterquant`` and sparsegpt.py's ``fasterprune``), where both define the same result."""

import math

import pytest
import torch

from sweep.compress.gptq import gptq_quantize
from sweep.compress.hessian import accumulate_hessian
from sweep.compress.rtn import QuantSpec, round_up_to_scale_dtype
from sweep.compress.sparsegpt import sparsegpt_prune

from .conftest import calibration_like


def _find_params(x, maxq, sym):  # the reference Quantizer.find_params, per row
    xmin = torch.minimum(x.min(1).values, torch.zeros(x.shape[0]))
    xmax = torch.maximum(x.max(1).values, torch.zeros(x.shape[0]))
    if sym:
        xmax = torch.maximum(torch.abs(xmin), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    tmp = (xmin == 0) & (xmax == 0)
    xmin[tmp], xmax[tmp] = -1, +1
    scale = (xmax - xmin) / maxq
    # not in the reference: our scales are rounded up to bfloat16, the precision the export
    # stores them in (see sweep.compress.rtn.quant_params); the transcription does the same
    scale = round_up_to_scale_dtype(scale)
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
    return scale.unsqueeze(1), zero.unsqueeze(1)


def _quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


def _reference(W, H, blocksize=128, percdamp=0.01, bits=None, groupsize=-1, sym=False, nm=None):
    W, H = W.clone(), H.clone()
    maxq = 2**bits - 1 if bits else None
    columns = W.shape[1]
    if bits:
        scale, zero = _find_params(W, maxq, sym)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    Q = torch.zeros_like(W)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[:, i1:i2].clone()
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        mask1 = torch.zeros_like(W1) == 1
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            if nm is not None and i % nm[1] == 0:
                prunen, prunem = nm[1] - nm[0], nm[1]
                tmp = W1[:, i : i + prunem] ** 2 / (torch.diag(Hinv1)[i : i + prunem]) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            if nm is not None:
                q[mask1[:, i]] = 0
            if bits:
                if groupsize != -1 and (i1 + i) % groupsize == 0:
                    scale, zero = _find_params(W[:, i1 + i : i1 + i + groupsize], maxq, sym)
                q = _quantize(q.unsqueeze(1), scale, zero, maxq).flatten()
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q


@pytest.fixture(scope="module")
def wide_layer():
    x, w = calibration_like(tokens=512, d_in=256, d_out=32, seed=5)
    return w, accumulate_hessian(None, x, 0)[0]


@pytest.mark.parametrize(("bits", "group_size", "sym"), [(3, None, False), (4, 128, True)])
def test_gptq_matches_the_reference(wide_layer, bits, group_size, sym):
    w, h = wide_layer
    ours = gptq_quantize(w, h, bits, group_size, sym)
    ref = _reference(w, h, bits=bits, groupsize=group_size or -1, sym=sym)
    mismatch = (ours - ref).abs() > 1e-5
    assert int(mismatch.sum()) <= math.ceil(1e-3 * w.numel())  # rare rounding-boundary flips


@pytest.mark.parametrize("nm", [(2, 4), (4, 8)])
def test_sparsegpt_nm_matches_the_reference(wide_layer, nm):
    w, h = wide_layer
    ours, _ = sparsegpt_prune(w, h, 0.0, nm)
    torch.testing.assert_close(ours, _reference(w, h, nm=nm), rtol=1e-4, atol=1e-5)


def test_joint_sparsegpt_matches_the_reference_with_a_quantizer(wide_layer):
    w, h = wide_layer
    ours, _ = sparsegpt_prune(w, h, 0.0, (2, 4), QuantSpec(4, None, False))
    ref = _reference(w, h, nm=(2, 4), bits=4)
    mismatch = (ours - ref).abs() > 1e-5
    assert int(mismatch.sum()) <= math.ceil(1e-3 * w.numel())
