"""The assembled SAM2 model: encode an image, decode prompts, condition on memory, encode memory.

Attribute names are the official checkpoint's top-level key names. Tensors are batch
first; the batch axis is the image for the image predictor and the object for the tracker.
Shapes below are for a 1024-px model (S = image_size = 1024, image grid 64 x 64, low-res masks 256 x 256, C = d_model
= 256, mem_dim = 64); they scale with image_size. Coordinates are (x, y) in model-input pixels. Under autocast
(`Sam2Model.autocast`) tensors may come out bfloat16 or float16: on CUDA (float16 on GPUs before Ampere, see
devices.autocast_dtype), and on a CPU for a model given precision bfloat16 (fast mode); otherwise float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import xxhash
from torch import nn

from ..errors import DeviceError
from .blocks import MLP, PositionEmbeddingSine, sine_pe_1d
from .configs import ModelConfig
from .devices import autocast, autocast_dtype, compile_problem, interpolate
from .hiera import Hiera
from .image_encoder import FpnNeck, ImageEncoder
from .mask_decoder import MaskDecoder, TwoWayTransformer
from .memory import Fuser, MaskDownSampler, MemoryAttention, MemoryEncoder
from .prompt_encoder import PromptEncoder

NO_OBJ_SCORE = -1024.0  # mask logit given to every pixel of an object judged absent (Meta's NO_OBJ_SCORE)
MASK_INPUT_LOGIT_SCALE, MASK_INPUT_LOGIT_BIAS = 20.0, -10.0  # a mask prompt as output logits: mask * 20 - 10


@dataclass
class FrameFeatures:
    """Image-encoder output of one frame (or a batch of frames), on the model's device: (B, C, H, W) tensors, NCHW
    but for high_res, in the mask decoder's memory layout (MaskDecoder.feature_layout)."""

    vision: torch.Tensor  # (B, C, 64, 64) stride-16 features
    vision_pos: torch.Tensor  # (B, C, 64, 64) their sine position encoding
    high_res: tuple  # ((B, 32, 256, 256), (B, 64, 128, 128)), already through conv_s0 / conv_s1

    def expand(self, n: int) -> "FrameFeatures":
        """The same features repeated for n objects (a view, no copy)."""
        def rep(x):
            return x.expand(n, *x.shape[1:])
        return FrameFeatures(rep(self.vision), rep(self.vision_pos), tuple(rep(x) for x in self.high_res))

    def to(self, device) -> "FrameFeatures":
        """The features on another device."""
        return self.map(lambda x: x.to(device))

    def map(self, fn) -> "FrameFeatures":
        """fn applied to every tensor."""
        return FrameFeatures(fn(self.vision), fn(self.vision_pos), tuple(fn(x) for x in self.high_res))


@dataclass
class DecoderOutput:
    """What `Sam2Model.decode` returns for a batch of B prompts (or objects); logits are float32."""

    multi_logits: torch.Tensor  # (B, M, 256, 256) all returned masks (M = 3 or 1)
    ious: torch.Tensor  # (B, M)
    low_res: torch.Tensor  # (B, 1, 256, 256) the chosen mask
    high_res: torch.Tensor  # (B, 1, S, S) the chosen mask upsampled to the model input size
    obj_ptr: torch.Tensor  # (B, C) object pointer; the "no object" pointer where the object is absent
    object_score_logits: torch.Tensor  # (B, 1) > 0: present


class Sam2Model(nn.Module):
    """SAM2 / SAM2.1 (Meta's `SAM2Base` with its video-model steps), assembled from a ModelConfig.

    Every hyper-parameter is passed explicitly below, as segment-anything's `_build_sam` shows them; the values are
    the fields of `configs.ModelConfig`. Not trainable as written (no dropout, no drop path): build it, load a
    checkpoint (`checkpoints.load_model`), run it under `torch.no_grad()`.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        d, mem_dim, size = cfg.d_model, cfg.mem_dim, cfg.image_size
        self.image_encoder = ImageEncoder(
            trunk=Hiera(cfg.hiera),
            neck=FpnNeck(
                d_model=d,
                backbone_channel_list=cfg.hiera.channel_list,
                fpn_top_down_levels=cfg.fpn_top_down_levels,
                position_encoding=PositionEmbeddingSine(d, temperature=cfg.sine_pe_temperature),
            ),
            scalp=cfg.scalp,
        )
        # a mask prompt taken as the output: (B, 1, S, S) -> (B, 1, S / 4, S / 4) for the prompt encoder
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.memory_attention = MemoryAttention(
            d_model=d,
            mem_dim=mem_dim,
            num_layers=cfg.memory_attention_layers,
            num_heads=cfg.memory_attention_num_heads,
            dim_feedforward=cfg.memory_attention_dim_feedforward,
            rope_theta=cfg.rope_theta,
            feat_sizes=cfg.image_embedding_size,  # Meta builds 64 x 64 and rebuilds for any other grid at its first call
        )
        self.memory_encoder = MemoryEncoder(
            in_dim=d,
            out_dim=mem_dim,
            mask_downsampler=MaskDownSampler(
                embed_dim=d,
                kernel_size=cfg.mask_downsampler_kernel_size,
                stride=cfg.mask_downsampler_stride,
                padding=cfg.mask_downsampler_padding,
                total_stride=cfg.backbone_stride,
            ),
            fuser=Fuser(d, num_layers=cfg.fuser_num_layers, kernel_size=cfg.fuser_kernel_size,
                        padding=cfg.fuser_padding),
            position_encoding=PositionEmbeddingSine(mem_dim, temperature=cfg.sine_pe_temperature),
        )
        self.sam_prompt_encoder = PromptEncoder(
            embed_dim=d,
            image_embedding_size=cfg.image_embedding_size,
            input_image_size=(size, size),
            mask_in_chans=cfg.prompt_mask_in_chans,
        )
        self.sam_mask_decoder = MaskDecoder(
            dim=d,
            transformer=TwoWayTransformer(
                depth=cfg.decoder_transformer_depth,
                dim=d,
                num_heads=cfg.decoder_num_heads,
                mlp_dim=cfg.decoder_mlp_dim,
                downsample_rate=cfg.decoder_attention_downsample_rate,
            ),
            num_multimask_outputs=cfg.num_multimask_outputs,
            iou_head_depth=cfg.iou_head_depth,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
            obj_score_head_depth=cfg.obj_score_head_depth,
            dynamic_multimask_via_stability=cfg.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=cfg.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=cfg.dynamic_multimask_stability_thresh,
        )
        self.obj_ptr_proj = MLP(d, d, d, cfg.obj_ptr_proj_depth)
        if cfg.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj = nn.Linear(d, mem_dim)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, d))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, d))
        if cfg.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem_dim))
        self.compiled: dict | None = None  # the torch.compile options of `compile`, once compiled
        # The autocast dtype this model runs in; None: the device's policy (devices.autocast_dtype), float32: none.
        self.precision: torch.dtype | None = None

    @property
    def device(self) -> torch.device:
        """The device the weights are on."""
        return self.no_mem_embed.device

    @property
    def image_size(self) -> int:
        """Side S of the square model input, pixels."""
        return self.config.image_size

    @property
    def autocast_dtype(self) -> torch.dtype:
        """The dtype the matrix products run in: `precision` if set, else the device's policy (bfloat16 or float16 on
        CUDA, float32 elsewhere: devices.autocast_dtype)."""
        dtype = self.precision if self.precision is not None else autocast_dtype(self.device)
        return dtype or torch.float32

    def autocast(self):
        """The autocast context every forward pass of this model runs in (`autocast_dtype`; none for float32)."""
        return autocast(self.device, self.autocast_dtype)

    @property
    def numerics(self) -> str:
        """How this model computes, as far as that decides the bits of its outputs: the device type, the autocast
        precision and the torch.compile backend, e.g. "cpu-float32", "cuda-bfloat16-inductor". With `signature`,
        part of every cached result's key."""
        dtype = str(self.autocast_dtype).removeprefix("torch.")
        if self.compiled is None:
            return f"{self.device.type}-{dtype}"
        mode = self.compiled["mode"]
        return f"{self.device.type}-{dtype}-{self.compiled['backend']}" + (f"-{mode}" if mode else "")

    def compile(self, backend: str = "inductor", mode: str | None = None) -> "Sam2Model":
        """Compile the parts that run on every frame and every click with `torch.compile`, in place (returns self):
        the image encoder, the memory attention, the memory encoder and the mask decoder's prompt side. Optional, for
        GPUs (Meta's `vos_optimized` predictor does the same): the first frame and the first click wait while the
        kernels are generated (a minute or more); after that the work meets no new shape that compiles again. The
        number of clicks and box corners, and the memory growing over the first frames, are dynamic dimensions of
        the compiled code; a new number of objects tracked together compiles once more.

        Compiled kernels fuse operations and round differently: outputs agree with the eager model's within rounding,
        not bit for bit, so results cached by one are not reused by the other (`numerics`). backend, mode:
        torch.compile's ("inductor", and None, "max-autotune", ...). DeviceError where the backend cannot build its
        kernels (no C++ compiler for a CPU, no Triton for CUDA: devices.compile_problem)."""
        if self.compiled is not None:
            return self
        problem = compile_problem(self.device.type, backend)
        if problem is not None:
            raise DeviceError(problem)
        options = {"backend": backend, "mode": mode}
        self.image_encoder.compile(dynamic=False, **options)
        self.memory_encoder.compile(**options)
        self.memory_attention.compile(dynamic=True, **options)
        self.sam_mask_decoder.compile_prompt_side(**options)
        self.compiled = options
        return self

    @property
    def signature(self) -> str:
        """A 128-bit hex hash of the configuration and every weight: what a cached result of this model is keyed by
        (engine.feature_cache). Computed once (a fraction of a second for the large model); do not change the
        weights of a model in use."""
        if getattr(self, "_signature", None) is None:
            digest = xxhash.xxh3_128(repr(self.config).encode())
            for name, tensor in self.state_dict().items():
                data = tensor.detach().cpu().contiguous()
                digest.update(name.encode())
                digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._signature = digest.hexdigest()
        return self._signature

    # ---- image -------------------------------------------------------------------------
    def encode_image(self, image: torch.Tensor) -> FrameFeatures:
        """image (B, 3, S, S) float32, RGB normalised with ImageNet mean / std (preprocess.model_input) -> the stride-16
        features, their position encoding and the stride-4 / stride-8 features for the mask decoder."""
        out = self.image_encoder(image)
        fpn = out["backbone_fpn"]
        high_res = (self.sam_mask_decoder.conv_s0(fpn[0]), self.sam_mask_decoder.conv_s1(fpn[1]))
        return FrameFeatures(fpn[-1], out["vision_pos_enc"][-1], self._mask_feature_layout(high_res))

    @staticmethod
    def cacheable(features: "FrameFeatures") -> tuple:
        """One frame's features as a feature-cache entry (vision, high_res_0, high_res_1); the position encoding is
        left out (the same for every frame: `features_from` rebuilds it)."""
        return (features.vision, *features.high_res)

    def features_from(self, entry: tuple) -> "FrameFeatures":
        """FrameFeatures on this model's device from a feature-cache entry (`cacheable`)."""
        vision, *high_res = (t.to(self.device, non_blocking=True) for t in entry)
        pos = self.image_encoder.neck.position_encoding(vision)
        return FrameFeatures(vision, pos, self._mask_feature_layout(high_res))

    def _mask_feature_layout(self, high_res) -> tuple:
        """The high-res features in the memory layout the mask decoder computes in (MaskDecoder.feature_layout):
        reordered once per frame, not at every decode."""
        layout = self.sam_mask_decoder.feature_layout(self.device)
        return tuple(t.contiguous(memory_format=layout) for t in high_res)

    # ---- prompts -> masks ---------------------------------------------------------------
    def decode(self, image_embed: torch.Tensor, high_res: tuple, point_coords: torch.Tensor | None = None,
               point_labels: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
               multimask_output: bool = False, image: dict | None = None) -> DecoderOutput:
        """SAM heads on (memory-conditioned) features, as the video model runs them (Meta's `_forward_sam_heads`).

        image_embed (B, C, 64, 64) from `features_without_memory` or `condition_on_memory`; high_res from
        FrameFeatures.high_res. point_coords (B, N, 2) float32 (x, y) in model pixels with labels (B, N) int32
        (1 positive, 0 negative, 2 / 3 box corners); no points means one padding point. mask_input (B, 1, h, w)
        logits, resized to 256 x 256 when needed. With multimask_output the mask with the highest predicted IoU is
        chosen. Absent objects (score <= 0) get NO_OBJ_SCORE masks and the "no object" pointer.
        image: `decoder_image_side(image_embed)` computed earlier, for decodes without mask_input: every click on a
        frame shares it (the same bits, a tenth less time at 1024 px).
        """
        if image is not None and mask_input is not None:
            raise ValueError("decoder_image_side holds the no-mask dense embedding: pass image only without mask_input")
        b = image_embed.shape[0]
        if point_coords is None:
            point_coords = torch.zeros(b, 1, 2, device=image_embed.device)
            point_labels = -torch.ones(b, 1, dtype=torch.int32, device=image_embed.device)
        if mask_input is not None and mask_input.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
            mask_input = interpolate(mask_input.float(), size=self.sam_prompt_encoder.mask_input_size,
                                     mode="bilinear", align_corners=False, antialias=True)
        sparse, dense = self.sam_prompt_encoder(points=(point_coords, point_labels), masks=mask_input)
        multi_logits, ious, tokens, object_score_logits = self.sam_mask_decoder(
            image_embed, self.sam_prompt_encoder.get_dense_pe(), sparse, dense,
            multimask_output=multimask_output, high_res_features=high_res, image=image,
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

    def decoder_image_side(self, image_embed: torch.Tensor) -> dict:
        """What `decode` computes from image_embed (1, C, 64, 64) alone when there is no mask input (the mask
        decoder's image tokens and their first projections, MaskDecoder.image_side): pass it as `decode(image=)`
        to every click on that image."""
        _, dense = self.sam_prompt_encoder(points=None, masks=None)
        return self.sam_mask_decoder.image_side(image_embed, self.sam_prompt_encoder.get_dense_pe(), dense)

    def decode_mask_prompt(self, image_embed: torch.Tensor, high_res: tuple, mask: torch.Tensor) -> DecoderOutput:
        """A user mask (B, 1, S, S) of 0 / 1 taken as the output as is (no SAM prediction), with its pointer (Meta's
        `_use_mask_as_output`): logits mask * 20 - 10, object score +10 where the mask has a pixel, else -10."""
        mask = mask.float()
        high_res_mask = mask * MASK_INPUT_LOGIT_SCALE + MASK_INPUT_LOGIT_BIAS
        low_res = interpolate(high_res_mask, size=(high_res_mask.shape[-2] // 4, high_res_mask.shape[-1] // 4),
                              mode="bilinear", align_corners=False, antialias=True)
        ptr = self.decode(image_embed, high_res, mask_input=self.mask_downsample(mask)).obj_ptr
        present = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()
        obj_ptr = present * ptr + (1 - present) * self.no_obj_ptr
        score = MASK_INPUT_LOGIT_SCALE * present + MASK_INPUT_LOGIT_BIAS
        ious = mask.new_ones(mask.shape[0], 1)
        return DecoderOutput(low_res, ious, low_res, high_res_mask, obj_ptr, score)

    # ---- memory ------------------------------------------------------------------------
    def condition_on_memory(self, features: FrameFeatures, memory: torch.Tensor, memory_pos: torch.Tensor,
                            num_obj_ptr_tokens: int, first: torch.Tensor | None = None) -> torch.Tensor:
        """Stride-16 features (B, C, 64, 64) after memory attention to memory (B, M, mem_dim) with position
        encodings memory_pos (B, M, mem_dim), whose last num_obj_ptr_tokens tokens are object pointers.
        first: `first_self_attention(features)` of this frame, computed once for all its objects."""
        b, c, h, w = features.vision.shape
        curr = features.vision.flatten(2).transpose(1, 2)
        curr_pos = features.vision_pos.flatten(2).transpose(1, 2)
        out = self.memory_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens, first=first)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def first_self_attention(self, features: FrameFeatures) -> torch.Tensor:
        """The part of the memory attention that reads the frame only (its first layer's self-attention), for one
        frame's features (batch 1): what every object tracked on that frame would otherwise compute again."""
        curr = features.vision[:1].flatten(2).transpose(1, 2)
        curr_pos = features.vision_pos[:1].flatten(2).transpose(1, 2)
        return self.memory_attention.first_self_attention(curr, curr_pos)

    def features_without_memory(self, features: FrameFeatures) -> torch.Tensor:
        """Features (B, C, 64, 64) of a frame with no memory to attend to (an initial conditioning frame, or a single
        image): the stride-16 features plus the "no memory" embedding."""
        return features.vision + self.no_mem_embed.view(1, -1, 1, 1)

    def memory_frame_pos(self, maskmem_pos: torch.Tensor, t_pos: int) -> torch.Tensor:
        """Position encoding (B, HW, mem_dim) of a memory at temporal position t_pos (0 = a conditioning frame,
        num_maskmem - k = the frame k steps back): the spatial encoding maskmem_pos (B, mem_dim, h, w) plus the
        learnt temporal one."""
        return maskmem_pos.flatten(2).transpose(1, 2) + self.maskmem_tpos_enc[self.config.num_maskmem - t_pos - 1].view(1, 1, -1)

    def pointer_tokens(self, pointers: torch.Tensor, t_diffs: list[int],
                       max_ptrs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Object pointers (N, B, C) at temporal distances t_diffs (N frames) -> memory tokens and their
        position encodings, each (B, N * C // mem_dim, mem_dim): a pointer is split in mem_dim chunks. Distances
        are normalised by max_ptrs - 1 for the sine encoding (SAM2.1; SAM2 gives zero encodings)."""
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

    def encode_memory(self, features: FrameFeatures, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor,
                      binarize: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory (B, mem_dim, 64, 64) and its position encoding (B, mem_dim, 64, 64) from a frame and its mask
        logits (B, 1, S, S) (Meta's `_encode_new_memory`): the mask goes in as sigmoid(logits) (or logits > 0 with
        binarize) * sigmoid_scale + sigmoid_bias; absent objects (score <= 0) get the "no object" embedding (2.1)."""
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
