"""The `napari-sam2` command line.

Each subcommand group has an `_add_<group>_commands(subparsers)` function that builds its parsers
and binds each one to a handler through `set_defaults(handler=...)`; a handler takes the parsed
arguments and returns the exit status. Exit status: 0 ok, 2 bad usage or input (one line on
stderr), 1 any other failure.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import traceback
import warnings

from .. import __version__
from ..errors import InputError, OutOfMemory, PromptWarning, Sam2Error, SaturationWarning, translate_out_of_memory
from ..models import registry as models

PROG = "napari-sam2"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _error(message: str) -> None:
    # One line, like argparse's own errors, so scripts can show or grep it.
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


def _warning(message: str) -> None:
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


# ---------------------------------------------------------------- models


def _models_list(args: argparse.Namespace) -> int:
    """One row per model (the path last: it may hold spaces); under each registry model an indented line with its
    source, licence and preprocessing, so a row stays one line for grep and scripts."""
    rows = [("NAME", "CONFIG", "PARAMS", "CACHED", "PATH")]
    notes = {}
    for info in models.MODELS.values():
        path = models.cached_path(info.name)
        rows.append((info.name, info.config_name, f"{info.params_m:g}M", "yes" if path.is_file() else "no", str(path)))
        notes[len(rows) - 1] = (
            f"    source: {info.source}; licence: {info.licence}; preprocessing: {info.preprocessing}"
        )
    for name, path in sorted(models.local_models().items()):
        rows.append((name, "-", "-", "local" if path.is_file() else "missing", str(path)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for number, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
        if number in notes:
            print(notes[number])
    return EXIT_OK


def _models_download(args: argparse.Namespace) -> int:
    if args.url and len(args.names) > 1:
        raise InputError("--url names one file: download one model at a time with it.")
    for name in args.names:
        info = models.resolve_name(name)
        if models.cached_path(info.name).is_file() and not args.force:
            print(f"{info.name}: already downloaded (use --force to fetch it again)", file=sys.stderr)
        bar = models.TextProgressBar(info.name)
        try:
            path = models.download(info.name, progress=bar, force=args.force, url=args.url)
        finally:
            bar.close()
        print(path)
    return EXIT_OK


def _models_path(args: argparse.Namespace) -> int:
    print(models.model_path(args.name, download=False))
    return EXIT_OK


def _models_register(args: argparse.Namespace) -> int:
    from ..models.loaded import checkpoint_variant  # torch: only for this command

    variants = []  # a file that is no SAM2 checkpoint is refused now, not at its first use
    path = models.register_local(args.name, args.path, check_file=lambda file: variants.append(checkpoint_variant(file)))
    print(f"registered {args.name} ({variants[0]}): {path}")
    return EXIT_OK


def _add_models_commands(subparsers) -> None:
    group = subparsers.add_parser(
        "models",
        help="list, download and locate SAM2 checkpoints",
        description=f"Official checkpoints are cached in {models.cache_dir()} (set NAPARI_SAM2_CACHE to change it).",
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the official and registered models, and whether they are downloaded")
    listing.set_defaults(handler=_models_list)

    fetch = actions.add_parser("download", help="download official checkpoints into the cache")
    fetch.add_argument("names", nargs="+", metavar="NAME", help="e.g. sam2.1_hiera_tiny, sam2.1_hiera_b+ or large")
    fetch.add_argument("--force", action="store_true", help="download again even if the file is cached")
    fetch.add_argument("--url", help="fetch from this URL (a mirror) instead of the official one")
    fetch.set_defaults(handler=_models_download)

    where = actions.add_parser("path", help="print the checkpoint file of a model (never downloads)")
    where.add_argument("name", metavar="NAME", help="an official or registered model name")
    where.set_defaults(handler=_models_path)

    register = actions.add_parser("register", help="use an existing local checkpoint file under a name")
    register.add_argument("name", metavar="NAME")
    register.add_argument("path", metavar="PATH", help="the .pt file")
    register.set_defaults(handler=_models_register)


# ---------------------------------------------------------------- segment


# argparse names the option before these messages ("argument --channels: ...").
def _comma_list(text: str, kind) -> list:
    try:
        return [kind(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _channel_list(text: str) -> list[int]:
    return _comma_list(text, int)


def _intensity_range(text: str) -> list[float]:
    """LOW,HIGH: two finite numbers, LOW not above HIGH (checked here, before any stack is read)."""
    values = _comma_list(text, float)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two numbers), got {text!r}")
    low, high = values
    if not (math.isfinite(low) and math.isfinite(high)):
        raise argparse.ArgumentTypeError(f"LOW and HIGH must be finite numbers, got {text!r}")
    if low > high:
        raise argparse.ArgumentTypeError(f"LOW must not be above HIGH, got {text!r}: give {high:g},{low:g}")
    return values


def _model_for(args: argparse.Namespace):
    """The model the command asked for, in fast mode with --fast; the process's allocator tuned for long runs (the
    command line owns its process: engine.host_memory)."""
    from ..engine.host_memory import tune_host_memory

    tune_host_memory()
    model = _load_model(args.model, args.device, args.quiet, args.compile)  # None: as NAPARI_SAM2_COMPILE says
    if args.fast:
        from ..models.loaded import fast_variant

        model = fast_variant(model)
    return model


def _load_model(name_or_path: str, device: str, quiet: bool, compile: bool | None):
    from ..models.loaded import get_model

    bar = None if quiet else models.TextProgressBar(f"downloading {name_or_path}")
    try:
        path = models.model_path(name_or_path, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    return get_model(path, device, compile=compile)


def _preprocessing(name_or_path: str):
    """The preprocessing of the model the user named (a registry model's profile; SAM2's for a file)."""
    from ..models.loaded import preprocessing_for

    return preprocessing_for(name_or_path)


def _segment(args: argparse.Namespace) -> int:
    from . import file_segmentation as files

    if args.seed_frame is not None and not args.seed_labels:
        raise InputError("--seed-frame says which frame of the --seed-labels seeds the objects: give --seed-labels.")
    stacks = files.expand_inputs(args.stacks)
    jobs = files.plan_jobs(stacks, args.prompts, args.out, args.overwrite, seed_labels=args.seed_labels)
    # Every stack, prompts and seed label file is checked before the model is loaded or a pixel of a stack is read:
    # bad input stops everything here (exit 2, nothing written). After these checks a failure is one stack's (exit 1).
    checked = [files.prepare_stack(job, args.axis, args.channels, pixels=False, seed_frame=args.seed_frame or 0)
               for job in jobs]
    model = _model_for(args)
    return _each_checked(checked, lambda layout_only: _segment_one(layout_only, model, args), "stack(s)")


def _each_checked(checked, one, what: str) -> int:
    """``one(layout_only)`` for every checked input, in order: its output path on stdout when it returns None, else
    one error line with the reason it returned; the exit status (1 if any failed)."""
    failed = 0
    for layout_only in checked:
        reason = one(layout_only)
        if reason is None:
            print(layout_only.job.out, flush=True)
        else:
            _error(f"{layout_only.job.stack}: {reason}")
            failed += 1
    if failed:
        others = "; the others were written" if failed < len(checked) else ""
        print(f"{PROG}: {failed} of {len(checked)} {what} failed{others}.", file=sys.stderr)
    return EXIT_FAILURE if failed else EXIT_OK


def _segment_one(layout_only, model, args: argparse.Namespace) -> str | None:
    """Segment and write one checked stack: None when its labels are written, else why it failed (one line; its
    output is then not written: outputs appear only once complete). Only KeyboardInterrupt stops the others."""
    from . import file_segmentation as files

    bar = None if args.quiet else models.TextProgressBar(layout_only.job.stack.name, unit="frames")
    reason = None
    with _recorded_warnings() as caught:
        try:
            with translate_out_of_memory(getattr(model, "device", None)):
                stack = files.with_pixels(layout_only)
                labels = files.segment_prepared(stack, model, direction=args.direction,
                                                intensity_range=args.intensity_range, progress=bar,
                                                preprocessing=_preprocessing(args.model))
                files.write_labels(stack, labels, args.overwrite)
        except Exception as error:  # noqa: BLE001 - this stack failed (out of memory, a disk error, a bug...); go on with the others
            reason = _failure_reason(error)
        finally:
            if bar is not None:
                bar.close()
    _report_warnings(layout_only.job.stack, caught)
    return reason


def _failure_reason(error: Exception) -> str:
    if isinstance(error, (Sam2Error, OSError)):  # the message says what happened and what to do
        return str(error)
    return f"unexpected {type(error).__name__}: {error} (please report it)"


@contextlib.contextmanager
def _recorded_warnings():
    """Warnings recorded for _report_warnings; ours every time they come (each run of a stack may warn)."""
    with warnings.catch_warnings(record=True) as caught:
        for category in (SaturationWarning, PromptWarning):
            warnings.simplefilter("always", category)
        yield caught


def _report_warnings(stack, caught) -> None:
    """The first SaturationWarning of a stack as one line (a stack with further axes has several runs, each of
    which may warn), each distinct PromptWarning as one line; any other warning as Python shows it."""
    saturation = [warning for warning in caught if issubclass(warning.category, SaturationWarning)]
    if saturation:
        _warning(f"{stack}: {saturation[0].message}")
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, PromptWarning)):
        _warning(f"{stack}: {message}")
    for warning in caught:
        if not issubclass(warning.category, (SaturationWarning, PromptWarning)):
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


def _add_segment_commands(subparsers) -> None:
    from ..core.prompts import DIRECTIONS

    command = subparsers.add_parser(
        "segment",
        help="segment and track objects through TIFF stacks, from prompts saved in napari",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Track the prompted objects through each stack along one axis (z or t) and write an integer label TIFF\n"
            "(label value = object id) with the stack's axes and pixel sizes.\n\n"
            "Prompts: the CSV a napari Points layer saves (File > Save Selected Layers), with columns axis-0,\n"
            "axis-1, ... (the point's position on each axis of the stack), positive (True/False) and obj_id (1, 2,\n"
            "...), as the napari-sam2 widget's Points layer has them; or JSON: a list of\n"
            '{"frame": 12, "obj_id": 1, "points": [[row, col]], "labels": [1], "box": [row0, col0, row1, col1]}.\n\n'
            "Seed labels: a label TIFF (e.g. from Cellpose or StarDist; 0 = background), either one frame's labels\n"
            "(H, W) or the whole stack's (the stack's axes less channels); every label value on --seed-frame\n"
            "becomes an object with that id, prompted by its mask. Prompts then are optional; given too, they add\n"
            "clicks or objects. A one-frame label image seeds every run of a stack with further axes (e.g. each t of\n"
            "a t, z, y, x stack tracked along z); a whole stack's labels seed each run from its own position.\n\n"
            "File names may be templates with {stem} (the stack's name without .tif), {name} and {dir}."
        ),
        epilog=(
            "examples:\n"
            "  napari-sam2 segment nuclei.tif --prompts nuclei.csv --out nuclei_labels.tif\n"
            "  napari-sam2 segment 'data/*.tif' --prompts '{dir}/{stem}.csv' --out 'results/{stem}_labels.tif'\n"
            "  napari-sam2 segment cells.tif --seed-labels cellpose_z12.tif --seed-frame 12\n\n"
            "exit status: 0 all written, 2 bad usage or input (nothing written), 1 a stack failed."
        ),
    )
    command.add_argument(
        "--prompts", action="append", metavar="FILE",
        help="prompts file (.csv or .json); once per stack, in order, or one template (default: {dir}/{stem}.csv, "
        "then {dir}/{stem}.json; none with --seed-labels)",
    )
    _add_seed_label_options(command)
    command.add_argument(
        "--out", metavar="FILE", help="output TIFF, folder, or template (default: {dir}/{stem}_labels.tif)"
    )
    _add_stack_options(command)
    command.add_argument("--direction", choices=DIRECTIONS, default="both", help="from the prompted frames (default both)")
    command.add_argument("--overwrite", action="store_true", help="replace existing output files")
    command.set_defaults(handler=_segment)


def _frame_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a frame number (0, 1, 2, ...), got {text!r}")
    return value


# The automatic mask generator's parameters the command line offers (engine.auto_masks.AutomaticMaskGenerator).
AUTO_OPTIONS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "min_mask_region_area")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def _add_seed_label_options(command) -> None:
    command.add_argument(
        "--seed-labels", action="append", metavar="FILE",
        help="label TIFF whose labels on --seed-frame seed objects with those ids; once per stack, in order, or one "
        "template such as '{dir}/{stem}_seeds.tif'",
    )
    command.add_argument(
        "--seed-frame", type=_frame_number, metavar="N",
        help="the frame the seeds (seed labels, or automatic masks with track's --seed auto) are on (default 0)",
    )


def _add_stack_options(command) -> None:
    """The options saying how a stack is shown to which model (shared by `segment` and `embed`)."""
    from ..models.registry import DEFAULT_MODEL

    command.add_argument("stacks", nargs="+", metavar="STACK", help="TIFF / OME-TIFF stacks, or glob patterns")
    command.add_argument(
        "--axis", help="axis to propagate along: z, t, or an axis index (default: the stack's only non-image axis)"
    )
    command.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or checkpoint path (default {DEFAULT_MODEL})")
    command.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N, mps or cpu")
    command.add_argument("--channels", type=_channel_list, help="up to 3 channel indices shown to SAM2 as RGB, e.g. 0,2")
    command.add_argument(
        "--intensity-range", type=_intensity_range, metavar="LOW,HIGH",
        help="intensities mapped to black and white (default: 0.5 and 99.5 percentiles of the stack)",
    )
    command.add_argument(
        "--fast", action="store_true",
        help="a 512-px model input instead of 1024, in bfloat16 on a CPU that computes it natively: 6-15x quicker on "
             "a CPU, coarser masks (default: exact SAM2)",
    )
    command.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="compile the model with torch.compile: for GPUs (no quicker on a CPU); the first slice waits a minute or "
             "so, and masks differ from uncompiled ones by rounding only (default: as NAPARI_SAM2_COMPILE says, 1 or "
             "0; not compiled when it is unset)",
    )
    command.add_argument("--quiet", action="store_true", help="no progress bars")


# ---------------------------------------------------------------- track


def _track(args: argparse.Namespace) -> int:
    from . import file_tracking as files
    from .file_segmentation import expand_inputs

    auto = args.seed == "auto"
    for name in AUTO_OPTIONS:
        if getattr(args, name) is not None and not auto:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} sets SAM2's automatic seeding: give it with --seed auto.")
    if args.min_division_frames is not None and not args.divisions:
        raise InputError("--min-division-frames says when a split is a division: leave out --no-divisions.")
    if args.seed_frame is not None and not (args.seed_labels or auto):
        raise InputError("--seed-frame says which frame the --seed-labels or --seed auto seeds are on: give one.")
    formats = files.parse_formats(args.formats) if args.formats is not None else files.available_formats()
    if args.formats is None and "geff" not in formats:
        _warning("tracks.geff is not written: the geff package is not installed (pip install geff).")
    stacks = expand_inputs(args.stacks)
    jobs = files.plan_track_jobs(stacks, args.out, args.prompts, args.seed_labels, auto=auto, overwrite=args.overwrite)
    # Every time-lapse and seed is checked before the model is loaded (exit 2, nothing written); after these checks
    # a failure is one time-lapse's (exit 1).
    checked = [files.prepare_timelapse(job, args.axis, args.channels, seed_frame=args.seed_frame or 0,
                                       pixels=False)
               for job in jobs]
    model = _model_for(args)
    return _each_checked(checked, lambda layout_only: _track_one(layout_only, model, args, formats), "time-lapse(s)")


def _track_one(layout_only, model, args: argparse.Namespace, formats) -> str | None:
    """Track and write one checked time-lapse: None when its outputs are written, else why it failed (one line; its
    outputs are then not written)."""
    from . import file_tracking as files

    bar = None if args.quiet else models.TextProgressBar(layout_only.job.stack.name, unit="frames")
    auto = args.seed == "auto"
    seed_bar = None if args.quiet or not auto else models.TextProgressBar(
        f"{layout_only.job.stack.name}: finding cells", unit="batches")
    auto_options = {name: getattr(args, name) for name in AUTO_OPTIONS if getattr(args, name) is not None} or None
    reason = None
    with _recorded_warnings() as caught:
        try:
            with translate_out_of_memory(getattr(model, "device", None)):
                stack = files.with_pixels(layout_only)
                tracks = files.track_prepared(
                    stack, model, auto=auto, auto_options=auto_options, divisions=args.divisions,
                    min_division_frames=args.min_division_frames or 3, intensity_range=args.intensity_range,
                    progress=bar, seed_progress=seed_bar, preprocessing=_preprocessing(args.model),
                )
                files.write_track_outputs(stack, tracks, formats, args.overwrite)
        except Exception as error:  # noqa: BLE001 - this time-lapse failed; go on with the others
            reason = _failure_reason(error)
        finally:
            for shown in (seed_bar, bar):
                if shown is not None:
                    shown.close()
    _report_warnings(layout_only.job.stack, caught)
    return reason


def _add_track_commands(subparsers) -> None:
    command = subparsers.add_parser(
        "track",
        help="track cells through 2D time-lapse TIFFs, with divisions, and write labels and lineages (CTC, GEFF, CSV)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Follow every seeded cell through each time-lapse (frames along t, or --axis), end a cell that divides\n"
            "and follow its two daughters as new objects, and write into one folder per time-lapse (OUT/{stem}):\n"
            "  labels.tif   label value = object id (daughters get new ids), with the stack's axes and pixel sizes\n"
            "  RES/         Cell Tracking Challenge result: mask000.tif ... and res_track.txt (L B E P per track)\n"
            "  tracks.geff  the lineage graph (GEFF; needs the geff package)\n"
            "  tracks.csv   track_id, t, y, x, label, parent_track_id (one row per track and frame)\n"
            "  flags.csv    frames where an identity may have been swapped or lost, to check by eye\n\n"
            "Seeds (at least one): --prompts (clicks saved from napari, as for `segment`), --seed-labels (a label\n"
            "TIFF, e.g. Cellpose's, of one frame or of the whole time-lapse: its labels on --seed-frame become\n"
            "objects with those ids), --seed auto (SAM2's automatic masks on --seed-frame, ids after the others').\n"
            "Without any, the prompts beside the stack ({dir}/{stem}.csv or .json) are used.\n\n"
            "A time-lapse is 2D frames over time: stacks with further axes (t, z, y, x) are refused.\n"
            "File names may be templates with {stem} (the stack's name without .tif), {name} and {dir}."
        ),
        epilog=(
            "examples:\n"
            "  napari-sam2 track cells.tif --seed-labels cells_cellpose_t0.tif --out results\n"
            "  napari-sam2 track 'movies/*.tif' --seed auto --points-per-side 16 --out 'results/{stem}_tracks'\n"
            "  napari-sam2 track cells.tif --prompts cells.csv --formats ctc --out results --overwrite\n\n"
            "exit status: 0 all written, 2 bad usage or input (nothing written), 1 a time-lapse failed."
        ),
    )
    command.add_argument(
        "--out", required=True, metavar="DIR",
        help="folder for the results: each time-lapse's go into DIR/{stem}; or a template such as "
        "'results/{stem}_tracks'",
    )
    command.add_argument(
        "--prompts", action="append", metavar="FILE",
        help="prompts file (.csv or .json); once per stack, in order, or one template such as '{dir}/{stem}.csv'",
    )
    _add_seed_label_options(command)
    command.add_argument("--seed", choices=("auto",), help="auto: SAM2's automatic mask generator finds the cells")
    command.add_argument(
        "--points-per-side", type=_positive_int, metavar="K",
        help="with --seed auto: a K x K grid of points to find cells from (default 32; fewer is quicker)",
    )
    command.add_argument(
        "--pred-iou-thresh", type=_fraction, metavar="X",
        help="with --seed auto: keep masks SAM2 rates at least this good (0 to 1, default 0.8)",
    )
    command.add_argument(
        "--stability-score-thresh", type=_fraction, metavar="X",
        help="with --seed auto: keep masks that change little with the threshold (0 to 1, default 0.95)",
    )
    command.add_argument(
        "--min-mask-region-area", type=_frame_number, metavar="PIXELS",
        help="with --seed auto: remove specks and fill holes smaller than this in each mask (default 0: none)",
    )
    command.add_argument(
        "--no-divisions", dest="divisions", action="store_false",
        help="never split an object: a dividing cell stays one object",
    )
    command.add_argument(
        "--min-division-frames", type=_positive_int, metavar="K",
        help="a mask that splits into two parts lasting K frames is a division (default 3)",
    )
    command.add_argument(
        "--formats", metavar="LIST",
        help="track formats, from ctc, geff, csv (default all three; geff only when installed)",
    )
    _add_stack_options(command)
    command.add_argument("--overwrite", action="store_true", help="replace an earlier run's results in the folder")
    command.set_defaults(handler=_track)


# ---------------------------------------------------------------- embed


def _embed(args: argparse.Namespace) -> int:
    from ..core.feature_store import shared_feature_cache
    from . import file_segmentation as files

    stacks = files.expand_inputs(args.stacks)
    for path in stacks:  # every stack's layout first: bad input stops everything before any work (exit 2)
        files.stack_layout(path, axis=args.axis, channels=args.channels)
    model = _model_for(args)
    failed, evicted_before = 0, shared_feature_cache().store.evicted
    for path in stacks:
        bar = None if args.quiet else models.TextProgressBar(path.name, unit="frames")
        try:
            with translate_out_of_memory(getattr(model, "device", None)):
                files.precompute_file(path, model, axis=args.axis, channels=args.channels,
                                      intensity_range=args.intensity_range, progress=bar,
                                      preprocessing=_preprocessing(args.model))
        except Exception as error:  # noqa: BLE001 - this stack failed; what was stored stays, and the others go on
            _error(f"{path}: {_failure_reason(error)}")
            failed += 1
        finally:
            if bar is not None:
                bar.close()
    store = shared_feature_cache().store
    evicted = store.evicted - evicted_before
    if evicted:  # the user asked for all of these: say that older ones made room
        _warning(f"{evicted} frames' features stored earlier were removed to keep {store.folder} within "
                 f"{store.max_bytes / 2**30:.1f} GiB (NAPARI_SAM2_FEATURES_MAX_GB)")
    if not args.quiet:
        print(f"features stored in {store.folder} ({store.disk_bytes() / 2**30:.2f} GiB of at most "
              f"{store.max_bytes / 2**30:.1f} GiB)", file=sys.stderr)
    return EXIT_FAILURE if failed else EXIT_OK


def _add_embed_commands(subparsers) -> None:
    command = subparsers.add_parser(
        "embed",
        help="precompute the image features of TIFF stacks, so that segmenting them later (here or in napari) is "
        "quicker",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run the image encoder (the costliest step: about half of a tracked frame on a CPU) over every frame\n"
            "and store the features on disk, in the napari-sam2 cache (~16 MiB per frame at 1024 px). `segment`\n"
            "and the napari widget then skip the encoder for these frames, with the same results. Frames already\n"
            "stored are skipped, so an interrupted run resumes. Give the same --model, --axis, --channels,\n"
            "--intensity-range, --fast and --compile as you will segment with: the features are found again only for\n"
            "the same frames shown the same way to the same model, computing the same way on the same kind of device."
        ),
        epilog="example:\n  napari-sam2 embed 'data/*.tif' --model sam2.1_hiera_tiny\n\n"
        "exit status: 0 all stored, 2 bad usage or input, 1 a stack failed.",
    )
    _add_stack_options(command)
    command.set_defaults(handler=_embed)


# ---------------------------------------------------------------- sample


def _sample(args: argparse.Namespace) -> int:
    from ..io.sample_files import write_sample

    for path in write_sample(args.kind, args.out, overwrite=args.overwrite):
        print(path)
    return EXIT_OK


def _add_sample_commands(subparsers) -> None:
    from ..io.sample_files import SAMPLES

    command = subparsers.add_parser(
        "sample",
        help="write a synthetic sample stack, its ground truth and a prompts CSV (to try `segment`)",
        description="Writes KIND.tif (the stack), KIND_truth.tif (ground-truth labels) and KIND.csv (one click per "
        "object, as napari's Points layer saves it) into the folder given by --out.",
    )
    command.add_argument("kind", choices=tuple(SAMPLES), help="3D nuclei (z, y, x) or a time-lapse of cells (t, y, x)")
    command.add_argument("--out", default=".", metavar="FOLDER", help="folder to write into (default: here)")
    command.add_argument("--overwrite", action="store_true", help="replace existing files")
    command.set_defaults(handler=_sample)


# ---------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SAM2 / SAM2.1 segmentation from the command line.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_models_commands(commands)
    _add_segment_commands(commands)
    _add_track_commands(commands)
    _add_embed_commands(commands)
    _add_sample_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage or help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with translate_out_of_memory():
            return args.handler(args)
    except OutOfMemory as exc:  # e.g. while loading the model: not bad input, and nothing was written
        _error(str(exc))
        return EXIT_FAILURE
    except Sam2Error as exc:  # the message says what to do; a traceback would only hide it
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except OSError as exc:
        _error(f"{exc}")
        return EXIT_FAILURE
    except Exception:  # noqa: BLE001 - shown with its traceback
        traceback.print_exc()
        _error("unexpected failure (see the traceback above); please report it")
        return EXIT_FAILURE
