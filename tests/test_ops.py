import pytest
import torch

from nni_darts_ext.space.ops import (ALL_OPS, DARTS_OPS, OPS, FactorizedReduce, Identity, ReLUConvBN, Zero, build_op,
                                     check_op_names)


def test_registry_order_and_defaults():
    assert DARTS_OPS == ('none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3', 'sep_conv_5x5',
                         'dil_conv_3x3', 'dil_conv_5x5')
    assert ALL_OPS[8:] == ('sep_conv_7x7', 'conv_7x1_1x7') and len(OPS) == 10


@pytest.mark.parametrize('name', ALL_OPS)
@pytest.mark.parametrize('C', [8, 16])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('size', [8, 7])
def test_op_shapes(name, C, stride, size):
    x = torch.randn(2, C, size, size)
    for search in (True, False):
        y = build_op(name, C, stride, search=search)(x)
        expected = size if stride == 1 else (size + 1) // 2
        assert y.shape == (2, C, expected, expected)


def test_none_is_zero_of_strided_shape():
    x = torch.randn(2, 4, 8, 8)
    y = Zero(2)(x)
    assert y.shape == (2, 4, 4, 4) and torch.count_nonzero(y) == 0
    assert torch.count_nonzero(Zero(1)(x)) == 0 and Zero(1)(x).shape == x.shape


def test_search_vs_eval_versions():
    pool = build_op('max_pool_3x3', 8, 1, search=True)
    assert isinstance(pool[1], torch.nn.BatchNorm2d) and not pool[1].affine  # pools + non-affine BN in search
    assert isinstance(build_op('max_pool_3x3', 8, 1, search=False), torch.nn.MaxPool2d)
    bns = [m for m in build_op('sep_conv_3x3', 8, 1, search=True).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.affine for bn in bns)
    bns = [m for m in build_op('sep_conv_3x3', 8, 1, search=False).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bn.affine for bn in bns)
    assert isinstance(build_op('skip_connect', 8, 1, search=False), Identity)
    assert isinstance(build_op('skip_connect', 8, 2, search=False), FactorizedReduce)


def test_factorized_reduce_uses_shifted_pixels():
    fr = FactorizedReduce(4, 8).eval()
    x = torch.zeros(1, 4, 8, 8)
    x[..., 1::2, 1::2] = 1.0   # only odd pixels: seen by the shifted branch, never by the first one
    y = fr.relu(x)
    assert torch.count_nonzero(fr.conv_1(y)) == 0 and torch.count_nonzero(fr.conv_2(y[:, :, 1:, 1:])) > 0
    assert ReLUConvBN(4, 6, 1, 1, 0)(torch.randn(2, 4, 5, 5)).shape == (2, 6, 5, 5)


def test_bad_names():
    with pytest.raises(ValueError, match="unknown op.*conv_9x9"):
        check_op_names(['conv_9x9', 'none'])
    with pytest.raises(ValueError, match='at least 2'):
        check_op_names(['none'])
    with pytest.raises(ValueError, match='Unknown op'):
        build_op('nope', 4, 1, search=True)
