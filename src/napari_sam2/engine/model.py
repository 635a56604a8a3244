"""The assembled SAM2 model: encode an image, decode prompts, condition on memory, encode memory.

Attribute names are the official checkpoint's top-level key names. Tensors are batch
first; the batch axis is the image for the image predictor and the object for the tracker.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import MLP, sine_pe_1d
from .configs import ModelConfig
from .image_encoder import ImageEncoder
from .mask_decoder import MaskDecoder
from .memory import MemoryAttention, MemoryEncoder
from .prompt_encoder import PromptEncoder

NO_OBJ_SCORE = -1024.0  # mask logit given to every pixel of an object judged absent


@dataclass
class FrameFeatures:
    """Image-encoder output of one frame (or a batch of frames), NCHW."""

    vision: torch.Tensor  # (B, C, 64, 64) stride-16 features
    vision_pos: torch.Tensor  # (B, C, 64, 64) their sine position encoding
    high_res: tuple  # ((B, 32, 256, 256), (B, 64, 128, 128)), already through conv_s0 / conv_s1

    def expand(self, n: int) -> "FrameFeatures":
        """The same features repeated for n objects (a view, no copy)."""
        def rep(x):
            return x.expand(n, *x.shape[1:])
        return FrameFeatures(rep(self.vision), rep(self.vision_pos), tuple(rep(x) for x in self.high_res))

    def to(self, device) -> "FrameFeatures":
        return self.map(lambda x: x.to(device))

    def map(self, fn) -> "FrameFeatures":
        return FrameFeatures(fn(self.vision), fn(self.vision_pos), tuple(fn(x) for x in self.high_res))


@dataclass
class DecoderOutput:
    multi_logits: torch.Tensor  # (B, M, 256, 256) all returned masks (M = 3 or 1)
    ious: torch.Tensor  # (B, M)
    low_res: torch.Tensor  # (B, 1, 256, 256) the chosen mask
    high_res: torch.Tensor  # (B, 1, S, S) the chosen mask upsampled to the model input size
    obj_ptr: torch.Tensor  # (B, C)
    object_score_logits: torch.Tensor  # (B, 1)


class Sam2Model(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        d, mem_dim, size = cfg.d_model, cfg.mem_dim, cfg.image_size
        self.image_encoder = ImageEncoder(cfg)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.memory_attention = MemoryAttention(d, mem_dim, cfg.memory_attention_layers)
        self.memory_encoder = MemoryEncoder(d, mem_dim)
        self.sam_prompt_encoder = PromptEncoder(d, (size // 16, size // 16), (size, size), mask_in_chans=16)
        self.sam_mask_decoder = MaskDecoder(
            d,
            dynamic_multimask_via_stability=cfg.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=cfg.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=cfg.dynamic_multimask_stability_thresh,
        )
        self.obj_ptr_proj = MLP(d, d, d, 3)
        if cfg.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj = nn.Linear(d, mem_dim)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, d))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, d))
        if cfg.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem_dim))

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    @property
    def image_size(self) -> int:
        return self.config.image_size

    # ---- image -------------------------------------------------------------------------
    def encode_image(self, image: torch.Tensor) -> FrameFeatures:
        """image (B, 3, S, S), normalised with ImageNet mean/std."""
        out = self.image_encoder(image)
        fpn = out["backbone_fpn"]
        high_res = (self.sam_mask_decoder.conv_s0(fpn[0]), self.sam_mask_decoder.conv_s1(fpn[1]))
        return FrameFeatures(fpn[-1], out["vision_pos_enc"][-1], high_res)

    # ---- prompts -> masks ---------------------------------------------------------------
    def decode(self, image_embed, high_res, point_coords=None, point_labels=None, mask_input=None,
               multimask_output=False) -> DecoderOutput:
        """SAM heads on (memory-conditioned) features, as the video model runs them.

        point_coords (B, N, 2) in model pixels with labels (B, N); no points means one padding
        point. Absent objects (score <= 0) get NO_OBJ_SCORE masks and the "no object" pointer.
        """
        b = image_embed.shape[0]
        if point_coords is None:
            point_coords = torch.zeros(b, 1, 2, device=image_embed.device)
            point_labels = -torch.ones(b, 1, dtype=torch.int32, device=image_embed.device)
        if mask_input is not None and mask_input.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
            mask_input = F.interpolate(mask_input.float(), size=self.sam_prompt_encoder.mask_input_size,
                                       mode="bilinear", align_corners=False, antialias=True)
        sparse, dense = self.sam_prompt_encoder(points=(point_coords, point_labels), masks=mask_input)
        multi_logits, ious, tokens, object_score_logits = self.sam_mask_decoder(
            image_embed, self.sam_prompt_encoder.get_dense_pe(), sparse, dense,
            multimask_output=multimask_output, high_res_features=high_res,
        )
        present = object_score_logits > 0
        multi_logits = torch.where(present[:, :, None, None], multi_logits, NO_OBJ_SCORE).float()
        size = self.image_size
        token = tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=ious.device)
            low_res = multi_logits[rows, best].unsqueeze(1)
            token = tokens[rows, best]
        else:
            low_res = multi_logits
        high_res_mask = F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)
        obj_ptr = self.obj_ptr_proj(token)
        is_present = present.float()
        obj_ptr = is_present * obj_ptr + (1 - is_present) * self.no_obj_ptr
        return DecoderOutput(multi_logits, ious, low_res, high_res_mask, obj_ptr, object_score_logits)

    def decode_mask_prompt(self, image_embed, high_res, mask: torch.Tensor) -> DecoderOutput:
        """A user mask (B, 1, S, S) taken as the output as is (no SAM prediction), with its pointer."""
        mask = mask.float()
        high_res_mask = mask * 20.0 - 10.0
        low_res = F.interpolate(high_res_mask, size=(high_res_mask.shape[-2] // 4, high_res_mask.shape[-1] // 4),
                                mode="bilinear", align_corners=False, antialias=True)
        ptr = self.decode(image_embed, high_res, mask_input=self.mask_downsample(mask)).obj_ptr
        present = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()
        obj_ptr = present * ptr + (1 - present) * self.no_obj_ptr
        score = 20.0 * present - 10.0
        ious = mask.new_ones(mask.shape[0], 1)
        return DecoderOutput(low_res, ious, low_res, high_res_mask, obj_ptr, score)

    # ---- memory ------------------------------------------------------------------------
    def condition_on_memory(self, features: FrameFeatures, memory, memory_pos, num_obj_ptr_tokens) -> torch.Tensor:
        """Stride-16 features (B, C, H, W) after attending to memory (B, M, mem_dim)."""
        b, c, h, w = features.vision.shape
        curr = features.vision.flatten(2).transpose(1, 2)
        curr_pos = features.vision_pos.flatten(2).transpose(1, 2)
        out = self.memory_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def features_without_memory(self, features: FrameFeatures) -> torch.Tensor:
        """Features of a frame with no memory to attend to (an initial conditioning frame)."""
        return features.vision + self.no_mem_embed.view(1, -1, 1, 1)

    def memory_frame_pos(self, maskmem_pos: torch.Tensor, t_pos: int) -> torch.Tensor:
        """Position encoding (B, HW, mem_dim) of a memory frame t_pos steps back (0 = a conditioning frame)."""
        return maskmem_pos.flatten(2).transpose(1, 2) + self.maskmem_tpos_enc[self.config.num_maskmem - t_pos - 1].view(1, 1, -1)

    def pointer_tokens(self, pointers: torch.Tensor, t_diffs, max_ptrs: int):
        """Object pointers (N, B, C) at temporal distances t_diffs -> memory tokens and their
        position encodings, each (B, N * C // mem_dim, mem_dim): a pointer is split in mem_dim chunks."""
        cfg = self.config
        n, b, c = pointers.shape
        mem_dim = cfg.mem_dim
        if cfg.add_tpos_enc_to_obj_ptrs:
            t = torch.tensor(t_diffs, device=pointers.device) / (max_ptrs - 1)
            pos = sine_pe_1d(t, dim=c if cfg.proj_tpos_enc_in_obj_ptrs else mem_dim)
            if cfg.proj_tpos_enc_in_obj_ptrs:
                pos = self.obj_ptr_tpos_proj(pos)
            pos = pos.unsqueeze(1).expand(-1, b, mem_dim)
        else:
            pos = pointers.new_zeros(n, b, mem_dim)
        split = c // mem_dim
        tokens = pointers.reshape(n, b, split, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
        pos = pos.repeat_interleave(split, dim=0)
        return tokens.transpose(0, 1), pos.transpose(0, 1)

    def encode_memory(self, features: FrameFeatures, high_res_masks, object_score_logits, binarize: bool):
        """Memory (B, mem_dim, H, W) and its position encoding from a frame and its predicted masks."""
        if binarize:
            mask_for_mem = (high_res_masks > 0).float()
        else:
            mask_for_mem = torch.sigmoid(high_res_masks)
        mask_for_mem = mask_for_mem * self.config.sigmoid_scale_for_mem_enc + self.config.sigmoid_bias_for_mem_enc
        # the official model hands its memory encoder the features through a flattened (HW, B, C) view: the same
        # values, but the strides it gets (batch stride C) change how the first 1x1 convolution rounds
        vision = features.vision
        maskmem, pos = self.memory_encoder(vision.flatten(2).view(vision.shape), mask_for_mem)
        if self.config.no_obj_embed_spatial:
            absent = 1 - (object_score_logits > 0).float()
            maskmem = maskmem + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return maskmem, pos
