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


@pytest.fixture(scope="module")
def model128():
    torch.manual_seed(0)
    model = build_model(get_config("sam2.1_hiera_t").with_(image_size=128)).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_complex_product_has_the_bits_of_the_real_arithmetic(dtype):
    """apply_rope multiplies complex numbers (Meta's way, one kernel); MPS runs the real formula: the same bits."""
    from napari_sam2.engine.blocks import apply_rope, axial_rope_angles, rotate_pairs_real

    angles = axial_rope_angles(32, 4, 4)
    rotation = torch.polar(torch.ones_like(angles), angles)
    cos, sin = rotation.real.contiguous(), rotation.imag.contiguous()
    keys = torch.randn(2, 1, 3 * 16 + 5, 32).to(dtype)[:, :, : 3 * 16]  # a slice, as the memory's keys are
    out = apply_rope(keys, cos, sin, repeat=3)
    pairs = keys.float().reshape(2, 1, 48, 16, 2)
    expected = rotate_pairs_real(pairs, cos.repeat(3, 1), sin.repeat(3, 1)).flatten(-2).to(dtype)
    assert out.dtype == dtype and torch.equal(out, expected)
    # in place: float32 rotates in its own memory (the rest of the buffer untouched); bfloat16 gets a new tensor
    buffer = keys._base.clone()
    own = buffer[:, :, : 3 * 16]
    rotated = apply_rope(own, cos, sin, repeat=3, inplace=True)
    assert torch.equal(rotated, expected) and torch.equal(buffer[:, :, 48:], keys._base[:, :, 48:])
    assert (rotated is own) == (dtype == torch.float32)
    assert torch.equal(own, expected if dtype == torch.float32 else keys)


def test_shared_first_self_attention_gives_the_same_bits(model128):
    """Objects tracked one by one on a frame share the first layer's self-attention: exactly what each computes."""
    attention = model128.memory_attention
    curr, curr_pos = torch.randn(1, 64, 256), torch.randn(1, 64, 256)
    memory, memory_pos = torch.randn(1, 3 * 64 + 4, 64), torch.randn(1, 3 * 64 + 4, 64)
    with torch.no_grad():
        alone = attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=4)
        first = attention.first_self_attention(curr, curr_pos)
        kept = first.clone()
        shared = attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=4, first=first)
        batch = attention(curr.expand(2, -1, -1), curr_pos.expand(2, -1, -1), memory.expand(2, -1, -1),
                          memory_pos.expand(2, -1, -1), num_obj_ptr_tokens=4, first=first)
    assert torch.equal(shared, alone)
    assert torch.equal(first, kept)  # the shared tensor is read, never written
    torch.testing.assert_close(batch, alone.expand(2, -1, -1), rtol=1e-5, atol=1e-5)


def test_decoder_broadcasts_one_image_over_many_prompt_sets(model128):
    """One image's embedding decoded for B prompt sets equals decoding each set with its own copy (Meta repeats the
    embedding); the position encoding is computed once and follows the weights."""
    encoder, decoder = model128.sam_prompt_encoder, model128.sam_mask_decoder
    image = torch.randn(1, 256, 8, 8)
    high_res = (torch.randn(1, 32, 32, 32), torch.randn(1, 64, 16, 16))
    points = (torch.rand(3, 2, 2) * 128, torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.int32))
    with torch.no_grad():
        pe = encoder.get_dense_pe()
        assert encoder.get_dense_pe() is pe
        sparse, dense = encoder(points=points)
        together = decoder(image, pe, sparse, dense, multimask_output=True, high_res_features=high_res)
        for i in range(3):
            one = decoder(image, pe, sparse[i : i + 1], dense[i : i + 1], multimask_output=True,
                          high_res_features=high_res)
            for a, b in zip(together, one):
                torch.testing.assert_close(a[i : i + 1], b, rtol=1e-5, atol=1e-5)
        matrix = encoder.pe_layer.positional_encoding_gaussian_matrix
        matrix.mul_(2.0)  # weights changed in place, as load_state_dict does
        try:
            changed = encoder.get_dense_pe()
            assert changed is not pe and torch.equal(changed, encoder.pe_layer(encoder.image_embedding_size)[None])
        finally:
            matrix.div_(2.0)


def test_the_decoders_image_side_computed_once_serves_every_click_with_the_same_bits(model128):
    """Sam2Model.decoder_image_side (the image tokens and the first block's projections of them) passed to decode
    gives the bits of a decode that computes it, click after click; it refuses a mask input (its dense embedding
    is the no-mask one)."""
    torch.manual_seed(1)
    image_embed = torch.randn(1, 256, 8, 8)
    high_res = (torch.randn(1, 32, 32, 32), torch.randn(1, 64, 16, 16))
    with torch.no_grad():
        side = model128.decoder_image_side(image_embed)
        for n in (1, 2, 5):
            coords = torch.rand(1, n, 2) * 128
            labels = torch.randint(0, 2, (1, n), dtype=torch.int32)
            for multimask in (False, True):
                fresh = model128.decode(image_embed, high_res, coords, labels, multimask_output=multimask)
                reused = model128.decode(image_embed, high_res, coords, labels, multimask_output=multimask,
                                         image=side)
                for name in ("multi_logits", "ious", "low_res", "high_res", "obj_ptr", "object_score_logits"):
                    assert torch.equal(getattr(fresh, name), getattr(reused, name)), name
        with pytest.raises(ValueError, match="mask_input"):
            model128.decode(image_embed, high_res, coords, labels, mask_input=torch.zeros(1, 1, 32, 32), image=side)


@pytest.mark.parametrize("b, h, n, m, v_heads, query_block, key_block", [
    (1, 1, 64, 200, 1, 1024, 512), (2, 1, 70, 33, 1, 16, 8), (2, 3, 40, 90, 3, 7, 13), (1, 2, 5, 12, 1, 2, 1),
    (1, 1, 48, 300, 1, 48, 64)])
def test_attention_by_tiles_is_scaled_dot_product_attention(b, h, n, m, v_heads, query_block, key_block):
    """Tiles of queries and keys (sizes that divide N and M or not, one key a tile, one tile for all), heads, values
    shared by the heads or per head: the fused kernel's result within float32 rounding."""
    from napari_sam2.engine.blocks import attention_by_tiles

    torch.manual_seed(0)
    q, k = torch.randn(b, h, n, 32) * 3, torch.randn(b, h, m, 32) * 3  # peaked softmax rows too
    v = torch.randn(b, v_heads, m, 8)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v.expand(b, h, m, 8))
    out = attention_by_tiles(q, k, v, query_block=query_block, key_block=key_block)
    assert out.shape == (b, h, n, 8)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_attention_by_tiles_keeps_its_maximum_when_a_later_tile_dwarfs_an_earlier_one():
    """The online softmax rescales what earlier tiles summed when a later tile holds a larger score, and never takes
    exp of a large positive number: scores far beyond exp's float32 range (about 88) in the first or the last tile."""
    from napari_sam2.engine.blocks import attention_by_tiles

    torch.manual_seed(1)
    q, k, v = torch.randn(1, 1, 6, 16), torch.randn(1, 1, 40, 16), torch.randn(1, 1, 40, 4)
    for key in (0, 39):
        k_big = k.clone()
        k_big[0, 0, key] = q[0, 0, 2] * 200  # query 2's score to this key: about 200 * |q|^2 / 4
        expected = torch.nn.functional.scaled_dot_product_attention(q, k_big, v)
        out = attention_by_tiles(q, k_big, v, query_block=4, key_block=8)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[0, 0, 2], v[0, 0, key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("num_heads", [1, 2])
def test_cross_attention_to_raw_values_matches_the_fused_kernel(num_heads, monkeypatch):
    """The memory attention's cross-attention (64-dim memory, 256-dim heads for one head) attends to the memory itself
    and projects afterwards on a float32 CPU: what projecting the values first and the fused kernel give, pointer
    tokens (no RoPE) included."""
    from napari_sam2.engine import blocks

    torch.manual_seed(0)
    attn = blocks.RoPEAttention(256, num_heads, rope_theta=10000.0, feat_sizes=(8, 8), rope_k_repeat=True,
                                kv_in_dim=64)
    for p in attn.parameters():
        p.data.normal_(0, 0.1)
    x, memory = torch.randn(2, 64, 256), torch.randn(2, 3 * 64 + 4, 64)
    keys = memory + torch.randn_like(memory)
    calls = []
    real = blocks.attention_by_tiles
    monkeypatch.setattr(blocks, "attention_by_tiles", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    with torch.no_grad():
        late = attn(x, keys, memory, num_k_exclude_rope=4)
        assert calls  # the raw-value path ran
        monkeypatch.setattr(blocks, "_attends_raw_values", lambda q, v: False)
        fused = attn(x, keys, memory, num_k_exclude_rope=4)
    torch.testing.assert_close(late, fused, rtol=1e-4, atol=1e-5)


def test_raw_values_only_for_float32_cpu_values_narrower_than_a_head():
    """Float32 on the CPU with values narrower than a head; never under bfloat16 (autocast keeps the fused kernel),
    nor where values are as wide as a head (self-attention)."""
    from napari_sam2.engine.blocks import _attends_raw_values

    q, narrow, wide = torch.zeros(1, 1, 4, 256), torch.zeros(1, 9, 64), torch.zeros(1, 9, 256)
    assert _attends_raw_values(q, narrow)
    assert not _attends_raw_values(q, wide)
    assert not _attends_raw_values(q.bfloat16(), narrow.bfloat16())
    assert not _attends_raw_values(q.to("meta"), narrow.to("meta"))


@pytest.mark.parametrize("channels_last_features", [True, False])
def test_mask_upscaling_in_the_feature_layout_is_metas_expression(model128, channels_last_features):
    """The decoder upscales in MaskDecoder.feature_layout (channels-last on a CPU, the tokens' own layout), whatever
    layout the high-res features come in: Meta's NCHW expression within float32 rounding; in a batch of prompt
    sets (objects tracked together) each row gets the bits it gets alone."""
    decoder = model128.sam_mask_decoder
    up1, norm1, act1, up2, act2 = decoder.output_upscaling
    h = w = 16
    torch.manual_seed(0)
    src = torch.randn(3, h * w, 256)
    feat_s1, feat_s0 = torch.randn(1, 64, 2 * h, 2 * w), torch.randn(1, 32, 4 * h, 4 * w)
    if channels_last_features:  # as Sam2Model keeps them
        feat_s1, feat_s0 = (f.contiguous(memory_format=torch.channels_last) for f in (feat_s1, feat_s0))
    with torch.no_grad():
        alone = [decoder.upscale(src[i : i + 1], (h, w), (feat_s0, feat_s1)) for i in range(3)]
        metas = [act2(up2(act1(norm1((up1(src[i : i + 1].transpose(1, 2).reshape(1, 256, h, w)) + feat_s1)
                                     .contiguous()))) + feat_s0) for i in range(3)]
        batch = decoder.upscale(src, (h, w), (feat_s0, feat_s1))
    assert decoder.feature_layout(torch.device("cpu")) == torch.channels_last
    assert batch.is_contiguous(memory_format=torch.channels_last)
    for i in range(3):
        torch.testing.assert_close(alone[i], metas[i], rtol=1e-5, atol=1e-5)
        assert torch.equal(batch[i : i + 1], alone[i])


def test_model_keeps_high_res_features_in_the_decoders_layout(model128):
    """Encoded or taken from a feature-cache entry (stored in any layout), the high-res features come in the layout
    the decoder computes in: no reorder per decode."""
    layout = model128.sam_mask_decoder.feature_layout(model128.device)
    with torch.no_grad():
        features = model128.encode_image(torch.randn(1, 3, 128, 128))
        entry = tuple(t.contiguous() for t in model128.cacheable(features))  # as a plain NCHW store gives them back
        again = model128.features_from(entry)
    for fresh, loaded in zip(features.high_res, again.high_res):
        assert fresh.is_contiguous(memory_format=layout) and loaded.is_contiguous(memory_format=layout)
        assert torch.equal(fresh, loaded)


def test_channel_layer_norm_of_a_channels_last_tensor_is_the_nchw_formula():
    """LayerNorm2d on channels-last memory (one fused LayerNorm over the NHWC view) gives the NCHW formula's values
    and keeps the layout; NCHW input takes the formula itself."""
    from napari_sam2.engine.blocks import LayerNorm2d

    torch.manual_seed(0)
    norm = LayerNorm2d(64)
    norm.weight.data.normal_(1, 0.2)
    norm.bias.data.normal_(0, 0.2)
    x = torch.randn(2, 64, 12, 10) * 3 + 1
    with torch.no_grad():
        nchw = norm(x)
        cl = norm(x.contiguous(memory_format=torch.channels_last))
        mean = x.mean(1, keepdim=True)
        formula = (x - mean) / torch.sqrt((x - mean).pow(2).mean(1, keepdim=True) + norm.eps)
        formula = norm.weight[:, None, None] * formula + norm.bias[:, None, None]
    assert torch.equal(nchw, formula)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, nchw, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("b, heads, n, m, d", [(1, 8, 4096, 8, 16), (2, 8, 300, 7, 16), (3, 1, 65, 64, 32)])
def test_attention_to_few_keys_is_scaled_dot_product_attention(b, heads, n, m, d):
    """Keys-major attention (the decoder's image->token attention on a CPU): the fused kernel's result, heads
    merged, within float32 rounding."""
    from napari_sam2.engine.blocks import _merge_heads, attention_to_few_keys

    torch.manual_seed(0)
    q, k, v = torch.randn(b, heads, n, d) * 2, torch.randn(b, heads, m, d) * 2, torch.randn(b, heads, m, d)
    expected = _merge_heads(torch.nn.functional.scaled_dot_product_attention(q, k, v))
    out = attention_to_few_keys(q, k, v)
    assert out.shape == (b, n, heads * d)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_decoder_attention_takes_the_keys_major_path_only_for_few_keys_in_float32(monkeypatch):
    """Attention uses attention_to_few_keys on a float32 CPU when the keys are few and the queries many (image to
    prompt tokens), and the fused kernel otherwise (token to image, bfloat16): the same values either way."""
    from napari_sam2.engine import blocks

    torch.manual_seed(0)
    attn = blocks.Attention(64, 4, downsample_rate=2)
    calls = []
    real = blocks.attention_to_few_keys
    monkeypatch.setattr(blocks, "attention_to_few_keys", lambda *a: (calls.append(1), real(*a))[1])
    image, tokens = torch.randn(1, 500, 64), torch.randn(1, 8, 64)
    with torch.no_grad():
        few = attn(image, tokens, tokens)
        assert calls == [1]
        attn(tokens, image, image)  # many keys
        with torch.autocast("cpu", dtype=torch.bfloat16):
            attn(image, tokens, tokens)
        assert calls == [1]
        monkeypatch.setattr(blocks, "FEW_KEYS", 0)
        fused = attn(image, tokens, tokens)
        assert calls == [1]
    torch.testing.assert_close(few, fused, rtol=1e-5, atol=1e-5)
