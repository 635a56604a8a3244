"""Single-image prediction with the semantics of Meta's SAM2ImagePredictor.

    predictor = ImagePredictor(model)
    predictor.set_image(rgb_uint8)                      # (H, W, 3)
    masks, ious, low_res = predictor.predict(point_coords=[[x, y]], point_labels=[1])
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .model import Sam2Model
from .preprocess import model_coords, model_input


def _as_array(value, name, dtype=np.float32):
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric, got {type(value).__name__}.") from None


class ImagePredictor:
    """Prompted segmentation of one image (Meta's SAM2ImagePredictor); the image embedding is computed once per
    image. Prompts are (x, y) = (column, row) in pixels of the image given to set_image. Bad arguments raise
    InputError."""

    mask_threshold = 0.0

    def __init__(self, model: Sam2Model):
        self.model = model
        self._features = None
        self._orig_hw = None

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return self.model.device

    @torch.inference_mode()
    def set_image(self, image: np.ndarray) -> None:
        """image: RGB uint8 array (H, W, 3) of any size; resized to the model input and embedded. InputError for another
        shape or dtype."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"set_image needs an RGB image of shape (H, W, 3); got shape {image.shape}.")
        if image.dtype != np.uint8:
            raise InputError(
                f"set_image needs uint8 RGB values 0-255; got {image.dtype}. Scale the image to 0-255 first "
                "(napari_sam2.segment_image does this for any dtype)."
            )
        rgb01 = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        self.set_model_input(model_input(rgb01.to(self.device), self.model.image_size), image.shape[:2])

    @torch.inference_mode()
    def set_model_input(self, model_input: torch.Tensor, original_size: tuple[int, int]) -> None:
        """A preprocessed float32 (3, S, S) model input (preprocess.model_input) of an image whose original size is
        (H, W) pixels."""
        with self.model.autocast():
            features = self.model.encode_image(model_input[None].to(self.device))
        self._features = {
            "image_embed": self.model.features_without_memory(features),
            "high_res_feats": features.high_res,
            "decoder_image": None,  # the decoder's prompt-free part, made at the first predict without mask_input
        }
        self._orig_hw = (int(original_size[0]), int(original_size[1]))

    def reset_image(self) -> None:
        """Forget the image and its embedding."""
        self._features = None
        self._orig_hw = None

    def _prompt_tensors(self, point_coords, point_labels, box, mask_input):
        coords = labels = None
        if point_coords is not None:
            if point_labels is None:
                raise InputError("point_labels are needed with point_coords (1 = positive, 0 = negative).")
            pts = _as_array(point_coords, "point_coords").reshape(-1, 2)
            lab = _as_array(point_labels, "point_labels", np.int64).reshape(-1)
            if len(pts) != len(lab):
                raise InputError(f"{len(pts)} points but {len(lab)} labels: give one label per point.")
            coords, labels = pts, lab
        if box is not None:
            corners = _as_array(box, "box").reshape(-1, 2)
            if corners.shape[0] != 2:
                raise InputError("box must be (x0, y0, x1, y1).")
            box_labels = np.array([2, 3])
            coords = corners if coords is None else np.concatenate([corners, coords])
            labels = box_labels if labels is None else np.concatenate([box_labels, labels])
        dev = self.device
        coords_t = None
        if coords is not None:
            coords_t = model_coords(torch.as_tensor(coords, dtype=torch.float32, device=dev), self._orig_hw,
                                    self.model.image_size)[None]
        labels_t = None if labels is None else torch.as_tensor(labels, dtype=torch.int32, device=dev)[None]
        mask_t = None
        if mask_input is not None:
            m = _as_array(mask_input, "mask_input")
            size = self.model.sam_prompt_encoder.mask_input_size
            if m.shape[-2:] != size or m.size != size[0] * size[1]:
                raise InputError(f"mask_input must be low-res logits of shape (1, {size[0]}, {size[1]}) "
                                 f"from an earlier predict; got {m.shape}.")
            mask_t = torch.as_tensor(m.reshape(1, 1, *size), device=dev)
        return coords_t, labels_t, mask_t

    @torch.inference_mode()
    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output: bool = True,
                return_logits: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks (C, H, W), IoU predictions (C,) and low-res logits (C, 256, 256), all float32 numpy, C = 3 with
        multimask_output else 1 (Meta's `SAM2ImagePredictor.predict` for one image).

        point_coords (N, 2) as (x, y) in pixels of the image given to set_image, point_labels (N,) 1 = positive,
        0 = negative; box (x0, y0, x1, y1) in the same pixels; mask_input (1, 256, 256) low-res logits from an
        earlier predict. Masks are 0 / 1 at the image's size (H, W), or logits with return_logits; low-res logits are
        clamped to [-32, 32]. InputError with no image set or malformed prompts.
        """
        if self._features is None:
            raise InputError("No image set: call set_image(image) before predict().")
        coords, labels, mask = self._prompt_tensors(point_coords, point_labels, box, mask_input)
        model = self.model
        with self.model.autocast():
            sparse, dense = model.sam_prompt_encoder(
                points=None if coords is None else (coords, labels), boxes=None, masks=mask
            )
            image = None
            if mask is None:  # every predict without a mask input shares it (the same bits)
                if self._features["decoder_image"] is None:
                    self._features["decoder_image"] = model.decoder_image_side(self._features["image_embed"])
                image = self._features["decoder_image"]
            low_res, ious, _, _ = model.sam_mask_decoder(
                self._features["image_embed"], model.sam_prompt_encoder.get_dense_pe(), sparse, dense,
                multimask_output=multimask_output, high_res_features=self._features["high_res_feats"], image=image,
            )
        low_res = low_res.float()
        masks = F.interpolate(low_res, size=self._orig_hw, mode="bilinear", align_corners=False)
        low_res = torch.clamp(low_res, -32.0, 32.0)
        if not return_logits:
            masks = masks > self.mask_threshold
        return (
            masks[0].float().cpu().numpy(),
            ious[0].float().cpu().numpy(),
            low_res[0].cpu().numpy(),
        )
