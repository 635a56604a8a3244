"""Mask decoder: a two-way transformer between prompt tokens and image features, then
hypernetwork heads that turn output tokens into masks, IoU estimates and an object score."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import MLP, Attention, LayerNorm2d, activate_


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image, MLP on tokens, image->token."""

    def __init__(self, *, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate=downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dim, num_layers=2, activation=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate=downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def image_projections(self, keys, key_pe) -> dict:
        """The projections of the block's input image tokens that its two cross-attentions make (the keys change
        only at the block's end): {"k", "v"} of the token->image attention and {"q"} of the image->token one, each
        (B, h*w, C / downsample_rate). In the first block they depend on the image alone, not on the prompts."""
        k = keys + key_pe  # one sum serves both cross-attentions
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return {"t2i": {"k": t2i.k_proj(k), "v": t2i.v_proj(keys)}, "i2t": {"q": i2t.q_proj(k)}}

    def forward(self, queries, keys, query_pe, key_pe, projected=None):
        """projected: `image_projections(keys, key_pe)`, computed here when None."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        projected = self.image_projections(keys, key_pe) if projected is None else projected
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, None, None, projected["t2i"]))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(None, queries + query_pe, queries, projected["i2t"]))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """`depth` two-way blocks between prompt tokens (queries) and the image embedding (keys), then a final
    token-to-image attention."""

    def __init__(self, *, depth: int, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim=dim, num_heads=num_heads, mlp_dim=mlp_dim, downsample_rate=downsample_rate,
                                 skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate=downsample_rate)
        self.norm_final_attn = nn.LayerNorm(dim)

    def image_side(self, image_embedding, image_pe) -> dict:
        """What the transformer computes from the image alone, whatever the prompts: the image tokens (B, h*w, C),
        their position encoding (1 or B, h*w, C) and the first block's projections of them. Computed once, it
        serves every prompt on that image (`forward(image=...)`), with the same bits."""
        # image tokens made contiguous once: every sum and projection below then runs on contiguous rows
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()  # a no-op for the prompt encoder's own PE
        return {"keys": keys, "key_pe": key_pe, "first": self.layers[0].image_projections(keys, key_pe)}

    def forward(self, image_embedding, image_pe, point_embedding, image=None):
        """image_embedding (B, C, h, w), image_pe (1 or B, C, h, w), point_embedding (B, N, C) -> tokens (B, N, C)
        and image tokens (B, h*w, C). image: `image_side(image_embedding, image_pe)` computed earlier (then the
        first two arguments are not read)."""
        image = self.image_side(image_embedding, image_pe) if image is None else image
        queries, keys, image_pe = point_embedding, image["keys"], image["key_pe"]
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, point_embedding, image_pe, image["first"] if i == 0 else None)
        q, k = queries + point_embedding, keys + image_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys


def stability_scores(mask_logits, delta):
    """Area ratio of the mask thresholded at +delta and at -delta: 1 = insensitive to the threshold."""
    flat = mask_logits.flatten(-2)
    inter = (flat > delta).sum(dim=-1).float()
    union = (flat > -delta).sum(dim=-1).float()
    return torch.where(union > 0, inter / union, torch.ones_like(inter))


class MaskDecoder(nn.Module):
    """SAM2's mask decoder (high-res features, object-score head, multimask-token object pointers, as Meta's
    SAM2 configs build it)."""

    def __init__(
        self,
        *,
        dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int,
        iou_head_depth: int,
        iou_head_hidden_dim: int,
        obj_score_head_depth: int,
        dynamic_multimask_via_stability: bool,
        dynamic_multimask_stability_delta: float,
        dynamic_multimask_stability_thresh: float,
    ):
        super().__init__()
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(  # 3 layers, as in Meta's code (not a config value)
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth,
                                       sigmoid_output=True)
        self.pred_obj_score_head = MLP(dim, dim, 1, obj_score_head_depth)
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.stability_delta = dynamic_multimask_stability_delta
        self.stability_thresh = dynamic_multimask_stability_thresh
        self.compiled = False  # `_predict` compiled (compile_prompt_side)

    def image_side(self, image_embeddings, image_pe, dense_prompt_embeddings) -> dict:
        """The part of the decoding that depends on the image and the dense prompt embedding alone, not on the
        points or boxes (TwoWayTransformer.image_side, and the grid size): computed once, it serves every click on
        an image (`forward(image=...)`), with the same bits."""
        src = image_embeddings + dense_prompt_embeddings
        return {**self.transformer.image_side(src, image_pe), "size": tuple(src.shape[-2:])}

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output, high_res_features, repeat_image=None, image=None):
        """image_embeddings (1 or B, C, h, w); image_pe (1, C, h, w); sparse (B, N, C) and dense (B, C, h, w) prompt
        embeddings. repeat_image: Meta's flag for an image batch of 1 with B prompt sets, accepted for its callers and
        not needed (that batch broadcasts). image: `image_side(image_embeddings, image_pe, dense)` computed earlier
        (then those three are not read).

        Returns mask logits (B, M, 4h, 4w), IoU predictions (B, M), the SAM output tokens (B, M', C) for object
        pointers, and object score logits (B, 1); M = 3 or 1."""
        if image is None:
            image = self.image_side(image_embeddings, image_pe, dense_prompt_embeddings)
        if self.compiled:  # the number of prompt tokens changes with every click: a dynamic size of the compiled code
            torch._dynamo.maybe_mark_dynamic(sparse_prompt_embeddings, 1)
        masks, iou_pred, mask_tokens_out, object_score_logits = self._predict(
            image, sparse_prompt_embeddings, high_res_features,
        )
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            if self.dynamic_multimask_via_stability:
                masks, iou_pred = self._dynamic_multimask(masks, iou_pred)
            else:
                masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]
            sam_tokens_out = mask_tokens_out[:, 0:1]
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def compile_prompt_side(self, **options) -> None:
        """torch.compile (with `options`) the decoding of prompt tokens against `image_side`: the transformer, the
        upscaling and the heads. The choice among multimask outputs stays outside, so that one compiled graph
        serves a click and several clicks alike."""
        self._predict = torch.compile(self._predict, **options)
        self.compiled = True

    def _predict(self, image, sparse, high_res_features):
        output_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)
        # an image batch of 1 broadcasts over the prompt sets (Meta repeats it: the same values); so does the
        # position encoding, inside the transformer
        hs, src = self.transformer(None, None, tokens, image=image)
        iou_token_out = hs[:, 1, :]
        mask_tokens_out = hs[:, 2 : 2 + self.num_mask_tokens, :]

        upscaled = self.upscale(src, image["size"], high_res_features)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.flatten(2)).view(b, -1, h, w)  # channels-last: a transposed operand, no copy
        iou_pred = self.iou_prediction_head(iou_token_out)
        object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        return masks, iou_pred, mask_tokens_out, object_score_logits

    @staticmethod
    def feature_layout(device: torch.device) -> torch.memory_format:
        """The memory layout of the mask features on `device`: the high-res features (FrameFeatures.high_res) are
        kept in it, and `upscale` computes in it. Channels-last on a CPU, where it was measured: the transposed
        convolutions read the tokens, already channels-last, without a reorder, and the channel LayerNorm is one
        fused pass (a click at 1024 px 1.3x quicker); NCHW elsewhere, as in Meta's code."""
        return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format

    def upscale(self, src: torch.Tensor, hw: tuple[int, int], high_res_features) -> torch.Tensor:
        """The image tokens src (B, h*w, C) after the transformer -> the mask features (B, C / 8, 4h, 4w) in
        `feature_layout`: two transposed convolutions, each followed by the high-res features of its scale (batch 1
        broadcasts over the prompt sets); LayerNorm and GELU after the first, GELU after the second (Meta's
        output_upscaling)."""
        # The convolutions' own kernels: a matrix product sums in another order, and that rounding, carried by the
        # memory from frame to frame, leaves Meta's outputs (golden video tolerances).
        (h, w), (b, _, c) = hw, src.shape
        layout = self.feature_layout(src.device)
        src = src.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous(memory_format=layout)
        up1, norm1, act1, up2, act2 = self.output_upscaling
        feat_s0, feat_s1 = (f.contiguous(memory_format=layout) for f in high_res_features)  # no-ops as kept
        upscaled = activate_(act1, norm1(up1(src).add_(feat_s1)))
        return activate_(act2, up2(upscaled.contiguous(memory_format=layout)).add_(feat_s0))

    def _dynamic_multimask(self, all_masks, all_ious):
        """Keep the single-mask output where it is stable, else the best of the 3 multimask outputs."""
        multi_masks, multi_ious = all_masks[:, 1:], all_ious[:, 1:]
        best = torch.argmax(multi_ious, dim=-1)
        rows = torch.arange(multi_ious.shape[0], device=all_ious.device)
        best_masks = multi_masks[rows, best].unsqueeze(1)
        best_ious = multi_ious[rows, best].unsqueeze(1)
        single_masks, single_ious = all_masks[:, 0:1], all_ious[:, 0:1]
        stable = stability_scores(single_masks, self.stability_delta) >= self.stability_thresh
        masks = torch.where(stable[..., None, None].expand_as(single_masks), single_masks, best_masks)
        ious = torch.where(stable.expand_as(single_ious), single_ious, best_ious)
        return masks, ious
