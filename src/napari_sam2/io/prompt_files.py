"""Prompts for a stack from a file: the CSV that napari's Points layer *Save* writes, or JSON.

CSV (napari's Points "Save"): one row per point, with
- the point's coordinates, one column per axis of the stack in the stack's axis order: ``axis-0``, ``axis-1``, ...
  as napari names them (or columns named by the axis letters, e.g. ``z``, ``y``, ``x``); an axis holding channels
  may be left out, as napari leaves it out of a layer opened with one layer per channel, and so may the frame axis
  of a single plane (a 2D image) or of a stack of one frame;
- ``positive``: True / False (also 1 / 0, positive / negative; the column may be called ``label``, as SAM2 calls it);
- ``obj_id``: the object the point marks, 1, 2, 3, ... (its label value in the output; also ``object_id``).
The napari-sam2 widget's Points layer has exactly these columns. Coordinates are data pixels of the image; the
frame and any further axes (e.g. t when tracking along z) are rounded to the nearest slice, as napari shows them.

JSON: a list of prompts (or ``{"prompts": [...]}``), each as :class:`napari_sam2.Prompt` takes them:
``{"frame": 12, "obj_id": 1, "points": [[row, col], ...], "labels": [1, 0], "box": [row0, col0, row1, col1]}``
with, for stacks with further axes, ``"at": {"t": 3}`` (axis letter or index -> position).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict

from ..core.axes import UNNAMED_LETTERS, StackAxes
from ..core.prompts import Prompt, object_id
from ..errors import InputError

POLARITY_COLUMNS = ("positive", "is_positive", "polarity", "point_label", "point_type", "sign", "label", "labels")
OBJ_ID_COLUMNS = ("obj_id", "object_id", "objectid", "object", "obj", "track_id", "label_id", "id")
_TRUE = {"1", "1.0", "true", "t", "yes", "y", "positive", "pos", "+"}
_FALSE = {"0", "0.0", "false", "f", "no", "n", "negative", "neg", "-"}

# (axis, position) for each further axis, sorted by axis; () when the stack has no further axes.
Position = tuple[tuple[int, int], ...]


def read_prompt_file(path, axes: StackAxes) -> dict[Position, list[Prompt]]:
    """The prompts in ``path`` (.csv or .json) for a stack laid out as ``axes``, grouped by the position of the
    further axes (one tracking run each). Errors name the file and say what to fix."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"Prompts file {path} does not exist.")
    try:
        if path.lower().endswith(".json"):
            grouped = _read_json(path, axes)
        else:
            grouped = _read_csv(path, axes)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"Cannot read the prompts file {path}: {error}") from None
    if not grouped:
        raise InputError(f"{path} holds no prompts: add at least one point (or box) on the object to segment.")
    return dict(grouped)


def _normalised(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _read_csv(path: str, axes: StackAxes) -> dict[Position, list[Prompt]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError("the file is empty; expected a header row and one row per point.")
    header = [_normalised(name) for name in rows[0]]
    shown = [name.strip() for name in rows[0]]  # messages quote the header as the file has it
    coordinate_columns, coordinate_axes = _coordinate_columns(header, shown, axes)
    polarity, obj_id = _point_columns(header, shown)

    grouped: dict[Position, list[Prompt]] = defaultdict(list)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"row {line} has {len(row)} values but the header names {len(header)} columns.")
        coordinates = {
            axis: _number(row[column], f"row {line}, column {rows[0][column]!r}")
            for column, axis in zip(coordinate_columns, coordinate_axes)
        }
        frame = _slice_index(coordinates.get(axes.frame_axis, 0.0), axes, axes.frame_axis, line)
        position = tuple((axis, _slice_index(coordinates[axis], axes, axis, line)) for axis in axes.other_axes)
        point = tuple(coordinates[axis] for axis in axes.spatial_axes)
        prompt = Prompt(
            frame,
            _obj_id(row[obj_id], f"row {line}"),
            points=[point],
            labels=[1 if _polarity(row[polarity], line) else 0],
        )
        grouped[position].append(prompt)
    return grouped


def _coordinate_columns(header: list[str], shown: list[str], axes: StackAxes) -> tuple[list[int], list[int]]:
    """Columns holding coordinates and the stack axis each one is, for napari's ``axis-N`` or letter columns."""
    numbered = [column for column, name in enumerate(header) if name.startswith("axis_") and name[5:].isdigit()]
    if numbered:
        names = [header[column] for column in numbered]
        if names != [f"axis_{n}" for n in range(len(numbered))]:
            found = [shown[column] for column in numbered]
            raise InputError(f"the coordinate columns must be axis-0, axis-1, ... in order; found {found}.")
        if len(numbered) == len(axes.shape):
            return numbered, list(range(len(axes.shape)))
        if len(numbered) == len(axes.label_axes):
            return numbered, list(axes.label_axes)
        if len(numbered) == len(_given_axes(axes)):
            return numbered, _given_axes(axes)
        raise InputError(
            f"it has {len(numbered)} coordinate columns (axis-0 to axis-{len(numbered) - 1}) but the stack has "
            f"{len(axes.shape)} axes ({axes.letters}, shape {axes.shape}). Save the prompts from a Points layer of "
            "this stack."
        )
    by_letter = {letter.lower(): axis for axis, letter in enumerate(axes.letters)}
    lettered = [(column, by_letter[name]) for column, name in enumerate(header) if name in by_letter]
    found = {axis for _, axis in lettered}
    if not set(_given_axes(axes)) <= found:
        raise InputError(
            "no coordinate columns: expected napari's axis-0, axis-1, ... (one per axis of the stack, "
            f"{axes.letters}) or columns named {', '.join(axes.label_letters.lower())}; the header is {shown}."
        )
    return [column for column, _ in lettered], [axis for _, axis in lettered]


def _given_axes(axes: StackAxes) -> list[int]:
    """The axes a CSV must give coordinates on: those of the labels, less a frame axis of length 1 (a single
    plane, or a stack of one frame), whose points are all on frame 0."""
    single_frame = axes.n_frames == 1
    return [axis for axis in axes.label_axes if not (single_frame and axis == axes.frame_axis)]


def _point_columns(header: list[str], shown: list[str]) -> tuple[int, int]:
    """The positive/negative and object id columns; one InputError naming every one missing."""
    found, missing = [], []
    for names, values in ((POLARITY_COLUMNS, "True / False"), (OBJ_ID_COLUMNS, "1, 2, ...")):
        column = next((header.index(name) for name in names if name in header), None)
        found.append(column)
        if column is None:
            missing.append((names[0], f"{names[0]} ({values}; also accepted: {', '.join(names[1:])})"))
    if missing:
        raise InputError(
            f"no {' and no '.join(name for name, _ in missing)} column: expected "
            f"{'; '.join(text for _, text in missing)}, as the napari-sam2 Points layer saves them; the header is "
            f"{shown}."
        )
    return found[0], found[1]


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a number.") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {text!r} is not a finite number.")
    return value


def _slice_index(value: float, axes: StackAxes, axis: int, line: int) -> int:
    """The slice a coordinate lies on: napari shows a point on the slice nearest to it."""
    index = math.floor(value + 0.5)
    size = axes.shape[axis]
    if not 0 <= index < size:
        raise InputError(
            f"row {line}: the point lies at {value:g} on axis {axis}{_named(axes.letters[axis])}, outside the stack's "
            f"{size} slices (0 to {size - 1}). Are these the prompts of this stack?"
        )
    return index


def _named(letter: str) -> str:
    """" (Z)" for an axis the file names; nothing for one it does not (tifffile's Q, I)."""
    return "" if letter in UNNAMED_LETTERS else f" ({letter})"


def _polarity(text: str, line: int) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InputError(f"row {line}: {text!r} is neither positive (True, 1) nor negative (False, 0).")


def _obj_id(text, where: str) -> int:
    try:
        return object_id(text)
    except InputError as error:
        raise InputError(f"{where}: {error}") from None


def _read_json(path: str, axes: StackAxes) -> dict[Position, list[Prompt]]:
    with open(path, encoding="utf-8") as handle:
        try:
            content = json.load(handle)
        except json.JSONDecodeError as error:
            raise InputError(f"not valid JSON ({error}).") from None
    entries = content.get("prompts") if isinstance(content, dict) else content
    if not isinstance(entries, list):
        raise InputError('expected a list of prompts, or {"prompts": [...]}.')
    grouped: dict[Position, list[Prompt]] = defaultdict(list)
    for number, entry in enumerate(entries, start=1):
        where = f"prompt {number}"
        if not isinstance(entry, dict):
            raise InputError(f"{where} is not an object like {{\"frame\": 0, \"obj_id\": 1, \"points\": [[r, c]]}}.")
        unknown = set(entry) - {"frame", "obj_id", "points", "labels", "box", "at"}
        if unknown or "frame" not in entry or "obj_id" not in entry:
            raise InputError(
                f"{where} needs frame and obj_id and may have points, labels, box and at; it has {sorted(entry)}."
            )
        try:
            prompt = Prompt(
                _json_index(entry["frame"], where, "frame"),
                _obj_id(entry["obj_id"], where),
                points=entry.get("points") or (),
                labels=entry.get("labels") or (),
                box=entry.get("box"),
            )
        except InputError as error:
            raise InputError(f"{where}: {error}") from None
        grouped[_json_position(entry.get("at") or {}, axes, where)].append(prompt)
    return grouped


def _json_index(value, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise InputError(f"{where}: {name} must be a whole number of 0 or more, got {value!r}.")
    return int(value)


def _json_position(at, axes: StackAxes, where: str) -> Position:
    if not isinstance(at, dict):
        raise InputError(f'{where}: "at" must map axes to positions, e.g. {{"t": 3}}.')
    positions: dict[int, int] = {}
    for key, value in at.items():
        axis = _json_axis(str(key), axes, where)
        index = _json_index(value, where, f"the position on axis {key}")
        if index >= axes.shape[axis]:
            raise InputError(f"{where}: position {index} on axis {key} is outside the stack (size {axes.shape[axis]}).")
        positions[axis] = index
    for axis in axes.other_axes:
        if axis not in positions:
            if axes.shape[axis] != 1:
                raise InputError(
                    f'{where}: say where on axis {axes.letters[axis].lower()} the prompt is, e.g. "at": '
                    f'{{"{axes.letters[axis].lower()}": 0}} (the stack has axes {axes.letters}).'
                )
            positions[axis] = 0
    return tuple(sorted(positions.items()))


def _json_axis(key: str, axes: StackAxes, where: str) -> int:
    if key.lstrip("-").isdigit():
        axis = int(key) % len(axes.shape) if -len(axes.shape) <= int(key) < len(axes.shape) else -1
    else:
        axis = axes.letters.find(key.upper()) if len(key) == 1 else -1
    if axis not in axes.other_axes:
        further = ", ".join(axes.letters[a].lower() for a in axes.other_axes) or "none"
        raise InputError(f'{where}: "at" names axis {key!r}; the stack\'s further axes are: {further}.')
    return axis
