"""The eight official SAM2 / SAM2.1 variants as frozen dataclasses: every hyper-parameter of the model in one place.

Values follow the `model` section of Meta's yaml configs (see the manifests in shared/reference/manifests) with the
constructor defaults of Meta's modules written out, so that `Sam2Model.__init__` (model.py), which assembles the
model, passes every one of them explicitly, as segment-anything's `_build_sam` does. The eight variants differ only
in their Hiera trunk; SAM2.1 differs from SAM2 only in the object-pointer temporal encoding and the "no object"
spatial embedding of the memory. `ModelConfig.with_(image_size=256)` gives a smaller input for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class HieraConfig:
    """Meta's `Hiera` trunk (sam2/modeling/backbones/hieradet.py): 4 stages, each later one at half the resolution
    (query pooling in its first block) with `dim_mul` times the channels and `head_mul` times the heads."""

    embed_dim: int  # channels of the first stage
    num_heads: int  # attention heads of the first stage
    stages: tuple[int, ...]  # blocks per stage
    global_att_blocks: tuple[int, ...]  # indices of the blocks that attend globally (the others within windows)
    window_pos_embed_bkg_spatial_size: tuple[int, int]  # (h, w) of the background position embedding
    window_spec: tuple[int, ...]  # window side (tokens) per stage
    q_pool: int = 3  # number of stage transitions that pool queries
    q_stride: tuple[int, int] = (2, 2)  # query pooling stride
    dim_mul: float = 2.0  # channel factor per stage
    head_mul: float = 2.0  # head factor per stage
    mlp_ratio: float = 4.0  # hidden / input channels of each block's MLP
    patch_kernel_size: int = 7  # patch embedding: a 7x7 convolution ...
    patch_stride: int = 4  # ... with stride 4 (stage 1 runs at 1/4 of the input size) ...
    patch_padding: int = 3  # ... and padding 3

    @property
    def depth(self) -> int:
        return sum(self.stages)

    @property
    def stage_ends(self) -> list[int]:
        """Index of the last block of each stage."""
        return [sum(self.stages[: i + 1]) - 1 for i in range(len(self.stages))]

    @property
    def q_pool_blocks(self) -> list[int]:
        """Indices of the blocks that pool their queries (the first block of stages 2 to q_pool + 1)."""
        return [end + 1 for end in self.stage_ends[:-1]][: self.q_pool]

    @property
    def channel_list(self) -> list[int]:
        """Output channels of each stage, lowest resolution first (the FPN's `backbone_channel_list`)."""
        dims = [int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages))]
        return dims[::-1]


@dataclass(frozen=True)
class ModelConfig:
    """One SAM2 variant. Sizes are in pixels of the square model input (`image_size`) unless said otherwise."""

    name: str
    hiera: HieraConfig
    version: str = "2.1"
    # ---- image encoder: Hiera trunk + FPN neck -------------------------------------------------------------------
    image_size: int = 1024  # side of the square model input, pixels
    backbone_stride: int = 16  # input pixels per cell of the image embedding (1024 px -> a 64 x 64 grid)
    d_model: int = 256  # hidden dim of the neck, the prompt encoder, the mask decoder and memory attention
    fpn_top_down_levels: tuple[int, ...] = (2, 3)  # FPN levels that add the upsampled coarser level
    scalp: int = 1  # the lowest-resolution FPN level is dropped
    sine_pe_temperature: int = 10000  # temperature of the 2D sine position encodings (FPN and memory)
    # ---- prompt encoder ------------------------------------------------------------------------------------------
    prompt_mask_in_chans: int = 16  # hidden channels of the mask-prompt downscaling
    # ---- mask decoder (two-way transformer + heads) --------------------------------------------------------------
    num_multimask_outputs: int = 3  # masks returned with multimask_output=True (a 4th token gives the single mask)
    decoder_transformer_depth: int = 2  # two-way attention blocks
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    decoder_attention_downsample_rate: int = 2  # token <-> image attention runs at d_model / 2 channels
    iou_head_depth: int = 3  # MLP layers of the IoU prediction head
    iou_head_hidden_dim: int = 256
    obj_score_head_depth: int = 3  # MLP layers of the object-score head (pred_obj_scores_mlp)
    # the single-mask token falls back to the best multimask output when unstable
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    multimask_min_pt_num: int = 0  # multimask output for 0 or 1 clicks (also on tracked frames)
    multimask_max_pt_num: int = 1
    # ---- object pointers -----------------------------------------------------------------------------------------
    obj_ptr_proj_depth: int = 3  # MLP layers from the SAM output token to the object pointer
    max_obj_ptrs_in_encoder: int = 16  # object pointers a frame attends to, at most
    # ---- memory encoder ------------------------------------------------------------------------------------------
    mem_dim: int = 64  # channels of the memory encoder output
    sigmoid_scale_for_mem_enc: float = 20.0  # mask -> memory encoder input: sigmoid(logits) * 20 - 10
    sigmoid_bias_for_mem_enc: float = -10.0
    mask_downsampler_kernel_size: int = 3  # the mask goes down to the image grid by strided convolutions
    mask_downsampler_stride: int = 2
    mask_downsampler_padding: int = 1
    fuser_num_layers: int = 2  # ConvNeXt blocks fusing image features and mask
    fuser_kernel_size: int = 7
    fuser_padding: int = 3
    # ---- memory attention ----------------------------------------------------------------------------------------
    num_maskmem: int = 7  # memory frames: 1 conditioning + the 6 previous frames
    memory_attention_layers: int = 4
    memory_attention_num_heads: int = 1
    memory_attention_dim_feedforward: int = 2048
    rope_theta: float = 10000.0  # 2D axial RoPE of memory attention
    max_cond_frames_in_attn: int = -1  # conditioning frames attended to: -1 = all
    # ---- SAM2.1 flags (all False for SAM2) -----------------------------------------------------------------------
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    no_obj_embed_spatial: bool = True
    # ---- video-only runtime behaviour set by Meta's build_sam2_video_predictor ----------------------------------
    binarize_mask_from_pts_for_mem_enc: bool = True
    fill_hole_area: int = 8  # holes of at most this many low-res pixels are filled
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def image_embedding_size(self) -> tuple[int, int]:
        """(h, w) of the image embedding grid: image_size // backbone_stride per side."""
        side = self.image_size // self.backbone_stride
        return side, side

    def with_(self, **changes) -> "ModelConfig":
        """A copy with some fields changed (e.g. `image_size=256`)."""
        return replace(self, **changes)


_TINY = HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), (7, 7), (8, 4, 14, 7))
_SMALL = HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13), (7, 7), (8, 4, 14, 7))
_BASE_PLUS = HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20), (14, 14), (8, 4, 14, 7))
_LARGE = HieraConfig(144, 2, (2, 6, 36, 4), (23, 33, 43), (7, 7), (8, 4, 16, 8))

_SAM2_FLAGS = dict(
    version="2.0",
    add_tpos_enc_to_obj_ptrs=False,
    proj_tpos_enc_in_obj_ptrs=False,
    use_signed_tpos_enc_to_obj_ptrs=False,
    no_obj_embed_spatial=False,
)

CONFIGS: dict[str, ModelConfig] = {}
for _size, _hiera in (("t", _TINY), ("s", _SMALL), ("b+", _BASE_PLUS), ("l", _LARGE)):
    CONFIGS[f"sam2.1_hiera_{_size}"] = ModelConfig(name=f"sam2.1_hiera_{_size}", hiera=_hiera)
    CONFIGS[f"sam2_hiera_{_size}"] = ModelConfig(name=f"sam2_hiera_{_size}", hiera=_hiera, **_SAM2_FLAGS)

VARIANTS = tuple(CONFIGS)


def get_config(name: str | ModelConfig) -> ModelConfig:
    """The config of one of the 8 official variants by name (e.g. 'sam2.1_hiera_t'); a ModelConfig is returned as
    is. Raises InputError for an unknown name."""
    from ..errors import InputError

    if isinstance(name, ModelConfig):
        return name
    try:
        return CONFIGS[name]
    except KeyError:
        raise InputError(
            f"Unknown SAM2 variant {name!r}. Choose one of: {', '.join(VARIANTS)}."
        ) from None
