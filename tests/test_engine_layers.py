"""The engine's in-place shortcuts give exactly what the plain expressions give, and never write into a tensor
they do not own; the trunk's cached position embedding follows its weights."""

import pytest
import torch
from torch import nn

from napari_sam2.engine import build_model, get_config
from napari_sam2.engine.blocks import activate_, add_residual_


@pytest.mark.parametrize("act", [nn.ReLU(), nn.GELU()])
def test_in_place_activation_has_the_same_bits(act):
    x = torch.randn(64, 384)
    expected = act(x)
    buffer = x.clone()
    out = activate_(act, buffer)
    assert out.data_ptr() == buffer.data_ptr()  # no new buffer
    assert torch.equal(out, expected)


def test_other_activations_are_applied_as_they_are():
    act = nn.GELU(approximate="tanh")
    x = torch.randn(8, 16)
    before = x.clone()
    assert torch.equal(activate_(act, x), act(before))
    assert torch.equal(x, before)  # left untouched


def test_residual_is_added_into_the_fresh_buffer_with_the_same_bits():
    residual, y = torch.randn(2, 50, 32), torch.randn(2, 50, 32)
    expected = residual + y
    residual_before = residual.clone()
    out = add_residual_(y, residual)
    assert out.data_ptr() == y.data_ptr()
    assert torch.equal(out, expected)
    assert torch.equal(residual, residual_before)  # the residual (someone else's tensor) is never written


@pytest.mark.parametrize("y, residual", [
    (torch.randn(4, 8).to(torch.bfloat16), torch.randn(4, 8)),  # bf16 + float32 is float32: not in place
    (torch.randn(1, 8), torch.randn(4, 8)),  # broadcasts to a larger shape
    (torch.randn(8, 4).t(), torch.randn(4, 8)),  # not contiguous
])
def test_residual_falls_back_where_the_buffer_cannot_hold_the_result(y, residual):
    y_before = y.clone()
    out = add_residual_(y, residual)
    assert torch.equal(out, residual + y_before)
    assert out.dtype == torch.promote_types(y.dtype, residual.dtype)
    assert torch.equal(y, y_before)


@pytest.fixture(scope="module")
def trunk():
    torch.manual_seed(0)
    trunk = build_model(get_config("sam2.1_hiera_t").with_(image_size=128)).image_encoder.trunk.eval()
    for p in trunk.parameters():
        p.data.normal_(0, 0.05)
    return trunk


def test_position_embedding_is_computed_once_and_follows_the_weights(trunk):
    with torch.no_grad():
        first = trunk._pos_embed((32, 32))
        assert trunk._pos_embed((32, 32)) is first  # the same frame size again: kept
        assert torch.equal(first, trunk._compute_pos_embed((32, 32)))
        assert trunk._pos_embed((16, 16)).shape[1:3] == (16, 16)
        trunk.pos_embed.add_(1.0)  # weights changed in place (as load_state_dict does)
        changed = trunk._pos_embed((16, 16))
        assert torch.equal(changed, trunk._compute_pos_embed((16, 16)))
        trunk.pos_embed.sub_(1.0)
    with torch.enable_grad():  # never handed to autograd from the cache
        assert trunk._pos_embed((16, 16)) is not trunk._pos_cache[1]
