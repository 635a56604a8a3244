"""The model input SAM2 was trained on: RGB in [0, 1], resized to the model's square input, ImageNet-normalised;
and prompts in that input's pixels.

The one place these rules live (as `Sam.preprocess` in SAM1): the image predictor, the tracker, the frame readers
and the benchmarks all call `model_input` and `model_coords`.

A fine-tuned model may have been trained with other preprocessing: a `Preprocessing` profile names it (the
intensity percentiles mapped to 0 and 1, and how a frame becomes square), and the model registry gives each model
its profile (`SAM2_DEFAULT` for Meta's files, `MICRO_SAM` for micro-sam's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from .devices import interpolate

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def model_input(rgb01: torch.Tensor, image_size: int) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] -> float32 (3, S, S) with S = image_size: an antialiased bilinear resize (Meta's
    `SAM2Transforms` / video frame loader; the identity when H = W = S), then (x - mean) / std per channel."""
    x = rgb01.float()
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"model_input expects an RGB tensor shaped (3, height, width); got {tuple(x.shape)}")
    if tuple(x.shape[-2:]) != (image_size, image_size):
        x = interpolate(x[None], size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)[0]
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - mean) / std


def model_coords(xy: torch.Tensor, original_hw, image_size: int) -> torch.Tensor:
    """(..., 2) float32 (x, y) in original-image pixels -> the same points in model-input pixels. As Meta's
    predictors: divided by (W, H), then multiplied by S (x * (S / W) rounds differently, and the tracker reproduces
    Meta's outputs bit for bit)."""
    h, w = original_hw
    return xy / torch.tensor([w, h], device=xy.device) * image_size


RESIZE_MODES = ("stretch", "longest_side_pad")


@dataclass(frozen=True)
class Preprocessing:
    """How a frame becomes a model input, as a model was trained.

    - ``intensity_percentiles``: (low, high) percentiles of each channel mapped to 0 and 1 (values outside clipped),
      when the user gives no intensity range.
    - ``resize``: "stretch" resizes H x W to S x S, as Meta's SAM2 (aspect ratio not kept); "longest_side_pad"
      puts the frame in the top-left corner of an L x L canvas of zeros (L = max(H, W), zeros in [0, 1] RGB, i.e.
      before the ImageNet normalisation), which is then resized to S x S: the longest side is resized to S, the
      aspect ratio is kept and the bottom / right are padded (micro-sam's `ResizeLongestSideTransforms`).
    """

    name: str
    intensity_percentiles: tuple[float, float] = (0.5, 99.5)
    resize: str = "stretch"
    description: str = ""

    def __post_init__(self):
        low, high = (float(v) for v in self.intensity_percentiles)
        if not 0.0 <= low < high <= 100.0:
            raise InputError(f"intensity_percentiles must be 0 <= low < high <= 100; got {self.intensity_percentiles}")
        if self.resize not in RESIZE_MODES:
            raise InputError(f"resize must be one of {', '.join(RESIZE_MODES)}; got {self.resize!r}")
        object.__setattr__(self, "intensity_percentiles", (low, high))

    @property
    def pads(self) -> bool:
        return self.resize == "longest_side_pad"

    def model_frame_size(self, original_hw) -> tuple[int, int]:
        """The (height, width) of the frame the model is given for an (H, W) frame: (H, W) when stretched, the
        (L, L) canvas when padded. Clicks in (row, col) of the frame are the same pixels of that canvas, and masks
        come back at this size (crop them to [:H, :W])."""
        h, w = (int(v) for v in original_hw)
        if self.pads:
            side = max(h, w)
            return side, side
        return h, w


SAM2_DEFAULT = Preprocessing(
    "sam2", (0.5, 99.5), "stretch", "Meta's SAM2: stretched to the square input; 0.5-99.5 percentile intensities"
)
MICRO_SAM = Preprocessing(
    "micro_sam", (2.0, 98.0), "longest_side_pad",
    "micro-sam's SAM2 models: per-channel 2-98 percentile intensities (micro_sam.v2.normalization.normalize_raw); "
    "longest side resized, bottom / right zero-padded (micro_sam.v2.transforms.resize)",
)
PROFILES = {profile.name: profile for profile in (SAM2_DEFAULT, MICRO_SAM)}


def preprocessing_profile(profile) -> Preprocessing:
    """A Preprocessing from itself, a profile name ("sam2", "micro_sam") or None (the SAM2 default)."""
    if profile is None:
        return SAM2_DEFAULT
    if isinstance(profile, Preprocessing):
        return profile
    if isinstance(profile, str) and profile.strip().lower() in PROFILES:
        return PROFILES[profile.strip().lower()]
    raise InputError(f"Unknown preprocessing {profile!r}: give one of {', '.join(PROFILES)} or a Preprocessing.")


def pad_to_square(rgb01: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (3, L, L), L = max(H, W): the frame in the top-left corner, zeros below and to its right (the
    frame itself when H = W)."""
    h, w = rgb01.shape[-2:]
    side = max(h, w)
    if h == w:
        return rgb01
    return F.pad(rgb01, (0, side - w, 0, side - h), value=0.0)


def longest_side_pad_input(rgb01: torch.Tensor, image_size: int) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] -> float32 (3, S, S): micro-sam's longest-side resize with zero padding.

    The frame is padded to the L x L square first (`pad_to_square`) and that square resized to S x S, so the model
    sees "original size" (L, L) and a (row, col) click keeps its place. micro-sam resizes first and pads after
    (`resize_longest_side_and_pad_tensor`); both give the same input except along the frame's last row or column
    next to the padding, which is blended with the zeros here (at most one model pixel, S / L of a frame pixel).
    The padding is 0 in [0, 1] RGB, before the ImageNet normalisation (as micro-sam: ToTensor, pad, Normalize), so
    after it the padded pixels hold -mean / std per channel."""
    return model_input(pad_to_square(rgb01.float()), image_size)


def prepare_input(rgb01: torch.Tensor, image_size: int, preprocessing: Preprocessing = SAM2_DEFAULT) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] -> float32 (3, S, S) as ``preprocessing`` says (`model_input` or
    `longest_side_pad_input`)."""
    if preprocessing.pads:
        return longest_side_pad_input(rgb01, image_size)
    return model_input(rgb01, image_size)
