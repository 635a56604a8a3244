"""The eight official SAM2 / SAM2.1 variants as plain dataclasses.

Values follow the `model` section of Meta's yaml configs (see the manifests in
shared/reference/manifests) with the constructor defaults made explicit. SAM2.1
differs from SAM2 only in the object-pointer temporal encoding and the
"no object" spatial embedding of the memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class HieraConfig:
    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_pos_embed_bkg_spatial_size: tuple[int, int]
    window_spec: tuple[int, ...]
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0

    @property
    def depth(self) -> int:
        return sum(self.stages)

    @property
    def stage_ends(self) -> list[int]:
        return [sum(self.stages[: i + 1]) - 1 for i in range(len(self.stages))]

    @property
    def q_pool_blocks(self) -> list[int]:
        return [end + 1 for end in self.stage_ends[:-1]][: self.q_pool]

    @property
    def channel_list(self) -> list[int]:
        """Output channels of each stage, lowest resolution first (the FPN's order)."""
        dims = [int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages))]
        return dims[::-1]


@dataclass(frozen=True)
class ModelConfig:
    name: str
    hiera: HieraConfig
    version: str = "2.1"
    image_size: int = 1024
    d_model: int = 256  # hidden dim of the neck, decoder and memory attention
    mem_dim: int = 64  # channels of the memory encoder output
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    scalp: int = 1  # the lowest-resolution FPN level is dropped
    num_maskmem: int = 7
    memory_attention_layers: int = 4
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    # SAM2.1 flags (all False for SAM2)
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    no_obj_embed_spatial: bool = True
    max_obj_ptrs_in_encoder: int = 16
    max_cond_frames_in_attn: int = -1
    # mask decoder: the single-mask token falls back to the best multimask output when unstable
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    # video-only runtime behaviour set by Meta's build_sam2_video_predictor
    binarize_mask_from_pts_for_mem_enc: bool = True
    fill_hole_area: int = 8
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def with_(self, **changes) -> "ModelConfig":
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


def get_config(name: str) -> ModelConfig:
    """The config of one of the 8 official variants, by its name (e.g. 'sam2.1_hiera_t')."""
    from ..errors import InputError

    if isinstance(name, ModelConfig):
        return name
    try:
        return CONFIGS[name]
    except KeyError:
        raise InputError(
            f"Unknown SAM2 variant {name!r}. Choose one of: {', '.join(VARIANTS)}."
        ) from None
