"""The scripting API: numpy arrays and prompts in, label arrays out. No Qt, no napari.

    from napari_sam2 import Prompt, segment_stack
    labels = segment_stack(stack, [Prompt(frame=12, obj_id=1, points=[(140, 96)])])

Prompts are in the array's own pixel coordinates, (row, col); label value = object id.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .core.channels import RGBA_SAMPLES, default_channels
from .core.frame_labels import LABEL_DTYPE, FrameLabels, check_ids_fit
from .core.frames import StackFrames
from .core.image_segmenter import ImageSegmenter
from .core.lineage import check_min_frames
from .core.prompts import Prompt, check_prompts_fit, group_prompts, prompt_list, warn_negative_only
from .core.seeding import seed_prompts
from .core.timelapse import (
    TimelapseTracks,
    automatic_seeds,
    check_auto_options,
    track_timelapse,
)
from .core.tracking import DIRECTIONS, Propagation, TrackingSession
from .errors import InputError
from .models.loaded import DEFAULT_MODEL, clear_model_cache, get_model, preprocessing_for

__all__ = [
    "DEFAULT_MODEL", "DIRECTIONS", "FrameLabels", "Prompt", "Propagation", "TrackingSession",
    "TimelapseTracks", "clear_model_cache", "get_model", "precompute_features", "segment_image", "segment_stack",
    "stream_stack", "track_stack",
]


def segment_image(
    image,
    prompts: Sequence[Prompt],
    model=DEFAULT_MODEL,
    device="auto",
    channel_axis: int | None = None,
    channels: Sequence[int] | None = None,
    intensity_range=None,
    preprocessing=None,
    fast: bool = False,
) -> np.ndarray:
    """Segment one 2D image: (H, W) grey, or (H, W, C) with channels last (or on ``channel_axis``).

    Any numeric dtype; intensities are scaled as for stacks (the model's percentiles, 0.5 and 99.5 for SAM2, or
    ``intensity_range``). ``preprocessing`` and ``fast``: as in :func:`stream_stack`.
    Every prompt has ``frame=0``. Returns an (H, W) int32 label image, label value = obj_id.

    Overlaps: objects are segmented independently; where two masks claim a pixel, the object with the highest mask
    logit there gets it, as in :func:`segment_stack` (SAM2's rule for several objects).
    """
    profile = preprocessing_for(model, preprocessing)
    frames = _image_as_one_frame(image, channel_axis, channels, intensity_range, image_size=1)
    prompts = prompt_list(prompts)
    for prompt in prompts:
        if prompt.frame != 0:
            raise InputError(
                f"segment_image segments a single image: every prompt needs frame=0 (object {prompt.obj_id} has "
                f"frame={prompt.frame}). For a stack use segment_stack."
            )
        if prompt.mask is not None:
            raise InputError(
                f"segment_image takes points and boxes; object {prompt.obj_id} has a mask, which on a single image "
                "is already its segmentation. Mask prompts seed objects in a stack: use segment_stack."
            )
    check_prompts_fit(prompts, 1, frames.original_size)
    check_ids_fit((prompt.obj_id for prompt in prompts), LABEL_DTYPE)  # label value = obj_id, exactly
    grouped = group_prompts(prompts, frames.original_size)
    warn_negative_only(prompts)

    loaded = get_model(model, device, fast=fast)
    frames = _image_as_one_frame(
        image, channel_axis, channels, intensity_range, image_size=loaded.image_size, preprocessing=profile
    )
    segmenter = ImageSegmenter(loaded)
    segmenter.set_frame(frames, 0)
    return segmenter.segment(grouped).labels


def stream_stack(
    stack,
    prompts: Sequence[Prompt] | None = None,
    axis: int = 0,
    model=DEFAULT_MODEL,
    device="auto",
    direction: str = "both",
    channel_axis: int | None = None,
    channels: Sequence[int] | None = None,
    intensity_range=None,
    fixed_indices=None,
    frame_range: tuple[int, int] | None = None,
    preprocessing=None,
    fast: bool = False,
    seed_labels=None,
    seed_frame: int = 0,
) -> Propagation:
    """Segment and track the prompted objects through ``stack`` along ``axis``, one frame at a time.

    Returns an iterator of :class:`FrameLabels` (``.frame``, ``.obj_ids``, ``.masks``, ``.labels``) with ``.total``,
    the number of distinct frames it will produce. Each object is tracked on its own, outward from its own
    prompted frames, so the labels depend on the prompts alone. A frame can come twice: in a "both" run, a frame
    between the first prompted frames of two objects comes first with the objects that reach it going forward,
    then again, later, with every object (and an object's own first prompted frame comes again at the start of
    its backward pass). Each FrameLabels holds the final masks of the objects it names, so writing every one in
    turn gives the final labels. Stop iterating to cancel: what was produced stays valid. Bad input raises
    InputError here, before any model is loaded; an object with only negative clicks on a frame (no positive click,
    box or mask there) is tracked as given, with a :class:`napari_sam2.errors.PromptWarning`.

    - ``direction``: "both" (each object forward from its first prompted frame to the end, then backward from it
      to the start), "forward" (each object from its first prompted frame) or "backward" (each object from its
      last prompted frame).
    - ``frame_range``: (first, last) frames, inclusive, to limit the run to.
    - ``fixed_indices``: ``{axis: index}`` for stacks with more axes, e.g. ``{1: 5}`` to track (t, z, y, x) along
      t at z = 5. ``channel_axis`` / ``channels``: colour channels (up to 3 shown to SAM2 as RGB).
    - Masks of different objects never overlap: the object with the highest logit gets a contested pixel.
    - ``preprocessing``: how frames become model inputs (a ``napari_sam2.engine.preprocess.Preprocessing`` or a
      profile name, "sam2" or "micro_sam"). By default the registry's profile when ``model`` is a registry name
      (micro-sam's "hvit_t_cells": 2-98 percentiles, longest side resized and zero-padded), else SAM2's.
    - ``fast``: run the model at a 512-px input instead of 1024, and in bfloat16 on a CPU that computes it natively
      (``napari_sam2.models.loaded.fast_variant``): 6-7x quicker on a CPU, 11-15x with native bfloat16, with coarser
      masks (structures under ~8 pixels of a 1024-px frame may be lost).
      The default is SAM2's exact behaviour.
    - ``seed_labels``: a label image, e.g. Cellpose or StarDist output: (H, W) labels of frame ``seed_frame``, or
      (N, H, W) labels of the whole stack (its ``seed_frame`` slice is used). Every label value on that frame
      becomes an object with that id, prompted by its mask (Meta's ``add_new_mask``); ``prompts`` may add clicks
      (on that frame they refine a seed's mask) or further objects. The array is never changed.
    """
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}.")
    frame_options = dict(
        axis=axis, channel_axis=channel_axis, channels=channels, intensity_range=intensity_range,
        fixed_indices=fixed_indices,
    )
    # Check the data and prompts before loading a model, which may mean a long download.
    probe = StackFrames(stack, prefetch=0, image_size=1, **frame_options)
    prompts = all_prompts(prompts, seed_labels, seed_frame, len(probe), probe.original_size)

    session = TrackingSession(stack, model=model, device=device, preprocessing=preprocessing, fast=fast,
                              **frame_options)
    try:
        session.add_prompts(prompts)
        run = session.propagate(direction, frame_range)
    except BaseException:
        session.close()
        raise

    def results():
        try:
            yield from run
        finally:
            session.close()

    return Propagation(results(), run.total, run.n_frames, run.frame_size)


def segment_stack(
    stack,
    prompts: Sequence[Prompt] | None = None,
    axis: int = 0,
    model=DEFAULT_MODEL,
    device="auto",
    direction: str = "both",
    progress: Callable[[int, int], None] | None = None,
    channel_axis: int | None = None,
    channels: Sequence[int] | None = None,
    intensity_range=None,
    fixed_indices=None,
    frame_range: tuple[int, int] | None = None,
    preprocessing=None,
    fast: bool = False,
    seed_labels=None,
    seed_frame: int = 0,
) -> np.ndarray:
    """Segment and track the prompted objects through ``stack``; returns an (N, H, W) int32 label array.

    N is the length of ``axis``; H and W are the two remaining image axes in the order they have in ``stack``
    (channel and fixed axes dropped). Label value = obj_id; frames the run does not reach stay 0.
    ``progress(frames_done, frames_total)`` is called after each frame. Other arguments as in
    :func:`stream_stack`.
    """
    run = stream_stack(
        stack, prompts, axis=axis, model=model, device=device, direction=direction, channel_axis=channel_axis,
        channels=channels, intensity_range=intensity_range, fixed_indices=fixed_indices, frame_range=frame_range,
        preprocessing=preprocessing, fast=fast, seed_labels=seed_labels, seed_frame=seed_frame,
    )
    labels = np.zeros((run.n_frames, *run.frame_size), LABEL_DTYPE)
    done: set[int] = set()
    for result in run:
        labels[result.frame] = result.labels
        done.add(result.frame)
        if progress is not None:
            progress(len(done), run.total)
    return labels


def track_stack(
    stack,
    prompts: Sequence[Prompt] | None = None,
    axis: int = 0,
    model=DEFAULT_MODEL,
    device="auto",
    seed_labels=None,
    seed_frame: int = 0,
    seed: str | None = None,
    auto_options: dict | None = None,
    divisions: bool = True,
    min_division_frames: int = 3,
    progress: Callable[[int, int], None] | None = None,
    seed_progress: Callable[[int, int], None] | None = None,
    channel_axis: int | None = None,
    channels: Sequence[int] | None = None,
    intensity_range=None,
    fixed_indices=None,
    preprocessing=None,
    fast: bool = False,
) -> TimelapseTracks:
    """Track cells through a time-lapse ``stack`` (frames along ``axis``), follow their divisions and build their
    lineage. Returns a :class:`TimelapseTracks`: ``labels`` (T, H, W) int32 (label value = object id; daughters
    get new ids above the seeds'), ``lineage`` (``tracks`` and ``graph`` for napari's Tracks layer, ``segments``,
    identity ``flags``) and ``divisions`` (mother id -> (frame, daughter ids)). Export with
    :func:`napari_sam2.io.track_export.write_tracking` (CTC, GEFF, CSV).

    Objects come from ``prompts``, from ``seed_labels`` (every label value on ``seed_frame`` becomes an object with
    that id, as in :func:`stream_stack`), or with ``seed="auto"`` from SAM2's automatic mask generator on
    ``seed_frame`` (``auto_options``: its parameters, e.g. ``{"points_per_side": 16, "pred_iou_thresh": 0.8}``),
    or from several of these together. ``divisions``: an object whose mask splits into two parts lasting
    ``min_division_frames`` frames ends before the split, and each part is tracked on as a daughter.
    ``progress(frames_done, frames_total)``: after each frame; the total grows when a division adds a run.
    ``seed_progress(batches_done, batches_total)``: after each batch of grid points of the automatic seeding. Other
    arguments as in :func:`stream_stack`.
    """
    if seed not in (None, "auto"):
        raise InputError(f"seed must be None or 'auto', got {seed!r}.")
    if auto_options is not None and seed != "auto":
        raise InputError("auto_options are the automatic seeding's parameters: give them with seed='auto'.")
    check_auto_options(auto_options or {})
    min_division_frames = check_min_frames(min_division_frames, "min_division_frames")
    frame_options = dict(
        axis=axis, channel_axis=channel_axis, channels=channels, intensity_range=intensity_range,
        fixed_indices=fixed_indices,
    )
    probe = StackFrames(stack, prefetch=0, image_size=1, **frame_options)
    given = all_prompts(prompts, seed_labels, seed_frame, len(probe), probe.original_size,
                        required=prompts is not None or seed != "auto")  # seed="auto" alone needs no prompt
    with TrackingSession(stack, model=model, device=device, preprocessing=preprocessing, fast=fast,
                         **frame_options) as session:
        if seed == "auto":
            taken = {prompt.obj_id for prompt in given}
            found = automatic_seeds(session, seed_frame, progress=seed_progress, **(auto_options or {}))
            # Automatic objects get ids after the given ones, so no given object is replaced.
            offset = max(taken, default=0)
            found = np.where(found > 0, found + offset, 0)
            given = given + seed_prompts(found, seed_frame, session.n_frames, session.frame_size)
        return track_timelapse(session, given, divisions=divisions, min_division_frames=min_division_frames,
                               progress=progress)


def precompute_features(
    stack,
    axis: int = 0,
    model=DEFAULT_MODEL,
    device="auto",
    progress: Callable[[int, int], None] | None = None,
    channel_axis: int | None = None,
    channels: Sequence[int] | None = None,
    intensity_range=None,
    fixed_indices=None,
    preprocessing=None,
    fast: bool = False,
) -> int:
    """Compute the image features of every frame of ``stack`` (as :func:`segment_stack` would see it) and store
    them on disk, so that later runs, clicks and sessions on these frames, in any process, skip the image encoder
    (the costliest step: half of a tracked frame on a CPU). Frames already stored are skipped, so an interrupted
    run resumes. ``progress(frames_done, frames_total)`` is called after each frame. Returns the number of frames.

    The features go to ``<checkpoint cache>/features`` (NAPARI_SAM2_CACHE moves it), ~16 MiB per frame of a
    1024-px model; they are found again only with the same model, device type, precision and the same frames,
    channels, intensity range and preprocessing (delete that folder to reclaim the space). Other arguments as in
    :func:`stream_stack`.
    """
    with TrackingSession(stack, axis=axis, model=model, device=device, channel_axis=channel_axis, channels=channels,
                         intensity_range=intensity_range, fixed_indices=fixed_indices, preprocessing=preprocessing,
                         fast=fast, prefetch=2) as session:
        for done, _ in enumerate(session.precompute_features(), start=1):
            if progress is not None:
                progress(done, session.n_frames)
        return session.n_frames


def all_prompts(prompts, seed_labels, seed_frame: int, n_frames: int, frame_size: tuple[int, int],
                required: bool = True) -> list[Prompt]:
    """The given prompts and one mask prompt per label of ``seed_labels`` on ``seed_frame`` (core.seeding), checked
    against the stack before any model is loaded: at least one in all (unless not ``required``), on its frames and
    image, ids that fit the int32 labels."""
    given = [] if prompts is None else prompts
    prompts = prompt_list(given) if given or (seed_labels is None and required) else []
    if seed_labels is not None:
        prompts = prompts + seed_prompts(seed_labels, seed_frame, n_frames, frame_size)
    check_prompts_fit(prompts, n_frames, frame_size)
    check_ids_fit((prompt.obj_id for prompt in prompts), LABEL_DTYPE)  # label value = obj_id, exactly
    if prompts:
        group_prompts(prompts, frame_size)  # one box and one mask per object and frame
    warn_negative_only(prompts)
    return prompts


def _image_as_one_frame(
    image, channel_axis, channels, intensity_range, image_size: int, preprocessing=None
) -> StackFrames:
    """A single 2D image (grey or with channels) as a one-frame StackFrames."""
    array = np.asarray(image) if not hasattr(image, "shape") else image
    ndim = len(array.shape)
    if ndim == 3 and channel_axis is None:
        if array.shape[-1] > RGBA_SAMPLES:  # a last axis up to this long holds colours; a longer one, images
            raise InputError(
                f"The image has shape {tuple(array.shape)}: this looks like a stack of {array.shape[0]} images, "
                f"not one image with channels. Use segment_stack, or give channel_axis= if an axis holds channels."
            )
        channel_axis = -1
        if channels is None:
            channels = default_channels(array.shape[-1], samples=True)  # RGBA: alpha is not part of the picture
    if ndim not in (2, 3) or (ndim == 2 and channel_axis is not None):
        raise InputError(
            f"segment_image needs one 2D image, (H, W) or (H, W, channels); got shape {tuple(array.shape)}. "
            "For a stack use segment_stack."
        )
    if channel_axis is not None:
        channel_axis = _axis_in(channel_axis, ndim) + 1  # the added frame axis comes first
    return StackFrames(
        array[None], axis=0, channel_axis=channel_axis, channels=channels, intensity_range=intensity_range,
        image_size=image_size, prefetch=0, preprocessing=preprocessing,
    )


def _axis_in(axis, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise InputError(f"channel_axis={axis!r} is not an axis of a {ndim}-D image.")
    return int(axis) % ndim
