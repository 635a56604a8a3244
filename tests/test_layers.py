"""Layer <-> prompt conversion, axes of a layer, and the labels-writing rule: no viewer, no model."""

import numpy as np
import pandas as pd
import pytest
from napari.layers import Image, Labels, Points, Shapes

from napari_sam2._napari.labels_writer import (
    LabelsRun,
    check_ids_fit_layer,
    frame_changes,
    largest_id,
    remove_object_labels,
)
from napari_sam2._napari.layer_prompts import OBJ_ID, POSITIVE, prompts_from_layers, to_image_data
from napari_sam2._napari.stack_plane import (
    axis_letters,
    channel_options,
    default_frame_axis,
    frame_axis_choices,
    stack_plane,
)
from napari_sam2.core.frame_labels import FrameLabels, highest_logit_wins
from napari_sam2.core.prompts import Prompt, check_prompts_fit, engine_prompt, group_prompts, rowcol_to_xy
from napari_sam2.errors import InputError

H, W = 48, 80  # non-square on purpose: a swapped row / col shows up


# ---- (row, col) -> (x, y) ------------------------------------------------------------------------


def test_rowcol_to_xy_swaps_at_the_corners_of_a_non_square_image():
    corners_rc = [(0, 0), (0, W - 1), (H - 1, 0), (H - 1, W - 1)]
    assert rowcol_to_xy(corners_rc).tolist() == [[0, 0], [W - 1, 0], [0, H - 1], [W - 1, H - 1]]


def test_engine_prompt_keeps_edge_pixels_and_clamps_the_outer_half_of_edge_pixels():
    prompt = engine_prompt(0, 1, [(0, 0), (H - 1, W - 1), (-0.4, W - 0.6)], [1, 0, 1], None, (H, W))
    assert prompt.points_xy.tolist() == [[0, 0], [W - 1, H - 1], [W - 1, 0]]
    assert prompt.labels.tolist() == [1, 0, 1]
    assert prompt.box_xy is None


def test_engine_prompt_box_is_x0_y0_x1_y1_with_sorted_corners():
    prompt = engine_prompt(2, 3, [], [], (H - 1, 5, 10, 0), (H, W))
    assert prompt.points_xy is None
    assert prompt.box_xy.tolist() == [0, 10, 5, H - 1]


def test_group_prompts_merges_points_per_frame_and_object():
    grouped = group_prompts(
        [Prompt(1, 2, [(3, 4)]), Prompt(1, 2, [(5, 6)], [0]), Prompt(0, 2, [(1, 1)]), Prompt(1, 7, box=(0, 0, 9, 9))],
        (H, W),
    )
    assert [(g.frame, g.obj_id) for g in grouped] == [(1, 2), (0, 2), (1, 7)]
    assert grouped[0].points_xy.tolist() == [[4, 3], [6, 5]]
    assert grouped[0].labels.tolist() == [1, 0]
    with pytest.raises(InputError, match="two boxes"):
        group_prompts([Prompt(0, 1, box=(0, 0, 2, 2)), Prompt(0, 1, box=(1, 1, 3, 3))], (H, W))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(frame=0, obj_id=0, points=[(1, 1)]), "obj_id"),
        (dict(frame=0, obj_id=-3, points=[(1, 1)]), "obj_id"),
        (dict(frame=0, obj_id=1.5, points=[(1, 1)]), "obj_id"),
        (dict(frame=0, obj_id=True, points=[(1, 1)]), "obj_id"),
        (dict(frame=-1, obj_id=1, points=[(1, 1)]), "frame"),
        (dict(frame=0, obj_id=1, points=[(1, 1)], labels=[2]), "1 \\(positive\\) or 0"),
        (dict(frame=0, obj_id=1, points=[(1, 1), (2, 2)], labels=[1]), "one label"),
        (dict(frame=0, obj_id=1, points=[(1, 2, 3)]), "row, col"),
        (dict(frame=0, obj_id=1, points=[(np.nan, 2)]), "finite"),
        (dict(frame=0, obj_id=1), "no points, box or mask"),
        (dict(frame=0, obj_id=1, box=(1, 2, 3)), "box"),
    ],
)
def test_bad_prompts_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        Prompt(**kwargs)


def test_prompt_accepts_numpy_numbers_and_defaults_labels_to_positive():
    prompt = Prompt(np.int64(2), np.int32(5), points=np.array([[1.5, 2.5], [3, 4]]))
    assert (prompt.frame, prompt.obj_id, prompt.labels) == (2, 5, (1, 1))
    assert prompt.points == ((1.5, 2.5), (3.0, 4.0))
    assert Prompt(0, 1, [(1, 1)], labels=[True]).labels == (1,)


def test_check_prompts_fit_accepts_the_whole_extent_of_edge_pixels_and_nothing_beyond():
    check_prompts_fit([Prompt(2, 1, [(-0.5, -0.5), (H - 0.5, W - 0.5)])], 3, (H, W))
    with pytest.raises(InputError, match="outside"):
        check_prompts_fit([Prompt(0, 1, [(H, 3)])], 3, (H, W))
    with pytest.raises(InputError, match="outside"):
        check_prompts_fit([Prompt(0, 1, [(3, -1)])], 3, (H, W))
    with pytest.raises(InputError, match="frame 3"):
        check_prompts_fit([Prompt(3, 1, [(3, 3)])], 3, (H, W))
    with pytest.raises(InputError, match="does not overlap"):
        check_prompts_fit([Prompt(0, 1, box=(H + 1, 0, H + 5, 5))], 3, (H, W))


# ---- layers -> prompts, through world coordinates -------------------------------------------------


def test_to_image_data_goes_through_world_coordinates_of_scaled_and_translated_layers():
    image = Image(np.zeros((5, H, W)), scale=(2.0, 0.5, 0.25), translate=(10.0, 5.0, -3.0))
    world_points = Points(np.array([[10.0, 5.0, -3.0], [18.0, 5.0 + 0.5 * (H - 1), -3.0 + 0.25 * (W - 1)]]))
    assert np.allclose(to_image_data(image, world_points, world_points.data), [[0, 0, 0], [4, H - 1, W - 1]])
    aligned = Points(np.array([[4.0, H - 1, W - 1]]), scale=image.scale, translate=image.translate)
    assert np.allclose(to_image_data(image, aligned, aligned.data), [[4, H - 1, W - 1]])


def test_to_image_data_refuses_a_prompt_layer_with_fewer_dims():
    with pytest.raises(InputError, match="dimensions"):
        to_image_data(Image(np.zeros((5, H, W))), Points(np.array([[1.0, 2.0]])), [[1.0, 2.0]])


def prompt_points(data, positive, obj_ids, **kwargs):
    features = pd.DataFrame({POSITIVE: np.asarray(positive, bool), OBJ_ID: np.asarray(obj_ids, np.int64)})
    return Points(np.asarray(data, float), features=features, **kwargs)


def test_points_and_rectangles_become_prompts_on_the_plane():
    image = Image(np.zeros((5, H, W)), scale=(3.0, 1.0, 1.0))
    plane = stack_plane(image, 0, (0, 0, 0))
    points = prompt_points([[2, 0, 0], [2, H - 1, W - 1], [4, 10.4, 20.6]], [True, False, True], [1, 1, 2],
                           scale=image.scale)
    boxes = Shapes(
        [np.array([[1, 5, 6], [1, 5, 30], [1, 20, 30], [1, 20, 6]], float)],
        shape_type="rectangle",
        features=pd.DataFrame({OBJ_ID: [3]}),
        scale=image.scale,
    )
    found = prompts_from_layers(image, plane, points, boxes)
    assert found.prompts == [
        Prompt(2, 1, [(0, 0)], [1]),
        Prompt(2, 1, [(H - 1, W - 1)], [0]),
        Prompt(4, 2, [(10.4, 20.6)], [1]),
        Prompt(1, 3, box=(5, 6, 20, 30)),
    ]
    assert found.off_plane == 0 and found.obj_ids == {1, 2, 3}
    assert [p.obj_id for p in found.on_frame(2)] == [1, 1]


def test_points_of_a_plain_points_layer_are_positive_points_of_object_1():
    image = Image(np.zeros((3, H, W)))
    found = prompts_from_layers(image, stack_plane(image, 0, (0, 0, 0)), Points(np.array([[1.0, 2.0, 3.0]])))
    assert found.prompts == [Prompt(1, 1, [(2, 3)], [1])]


def test_4d_prompts_on_another_plane_are_counted_not_used():
    image = Image(np.zeros((4, 3, H, W)), metadata={"axes": "tzyx"})
    plane = stack_plane(image, 0, (0, 2, 0, 0))  # along t, at z = 2
    assert plane.fixed == ((1, 2),)
    points = prompt_points([[1, 2, 5, 6], [3, 1, 5, 6]], [True, True], [1, 1])
    found = prompts_from_layers(image, plane, points)
    assert found.prompts == [Prompt(1, 1, [(5, 6)])] and found.off_plane == 1


def test_non_rectangles_are_skipped():
    image = Image(np.zeros((3, H, W)))
    line = Shapes([np.array([[0, 1, 1], [0, 9, 9]], float)], shape_type="line")
    found = prompts_from_layers(image, stack_plane(image, 0, (0, 0, 0)), None, line)
    assert found.prompts == [] and found.not_rectangles == 1


# ---- which axis is what ------------------------------------------------------------------------------


def test_axis_letters_come_from_axis_labels_or_metadata():
    assert axis_letters(Image(np.zeros((2, 3, 4, 5)), metadata={"axes": "TZYX"})) == ("t", "z", "y", "x")
    assert axis_letters(Image(np.zeros((2, 4, 5)), axis_labels=("time", "y", "x"))) == ("t", "y", "x")
    assert axis_letters(Image(np.zeros((2, 4, 5)))) == ("", "", "")


@pytest.mark.parametrize(
    "shape, axes, expected",
    [((6, 8, 8), "zyx", 0), ((6, 8, 8), "tyx", 0), ((5, 6, 8, 8), "tzyx", 1), ((5, 6, 8, 8), "ztyx", 0),
     ((5, 2, 8, 8), "tcyx", 0), ((5, 6, 8, 8), None, 0), ((8, 8), None, None)],
)
def test_default_frame_axis_prefers_z_then_t_then_the_first_free_axis(shape, axes, expected):
    metadata = {"axes": axes} if axes else {}
    assert default_frame_axis(Image(np.zeros(shape), metadata=metadata)) == expected


def test_channel_axis_is_neither_a_frame_axis_nor_fixed_and_labels_are_written_across_it():
    image = Image(np.zeros((5, 2, H, W)), metadata={"axes": "tcyx"})
    assert frame_axis_choices(image) == [0]
    assert [text for text, _ in channel_options(image)] == ["channels 0-1 as RGB", "channel 0", "channel 1"]
    plane = stack_plane(image, 0, (3, 1, 0, 0), channels=(1,))
    assert plane.fixed == () and plane.channel_axis == 1 and plane.broadcast_axes == (1,)
    args = plane.stack_arguments(image.data)
    assert args["channel_axis"] == 1 and args["channels"] == (1,) and args["fixed_indices"] is None
    index = plane.pixel_indices(4, np.array([7]), np.array([9]))
    assert [a.tolist() for a in index] == [[4, 4], [0, 1], [7, 7], [9, 9]]


def test_rgb_and_2d_planes():
    rgb = Image(np.zeros((4, H, W, 3), np.uint8), rgb=True)
    plane = stack_plane(rgb, 0, (0, 0, 0))
    assert plane.shape == (4, H, W) and plane.channel_axis == 3
    assert [t for t, _ in channel_options(rgb)] == ["RGB", "red", "green", "blue"]
    flat = Image(np.zeros((H, W)))
    plane2d = stack_plane(flat, None, (0, 0))
    assert plane2d.n_frames == 1 and plane2d.frame_of((3, 4)) == 0
    assert plane2d.stack_arguments(flat.data)["stack"].shape == (1, H, W)
    with pytest.raises(InputError, match="Choose the axis"):
        stack_plane(Image(np.zeros((3, H, W))), None, (0, 0, 0))


# ---- writing results into labels --------------------------------------------------------------------


def frame_result(frame, obj_ids, *masks):
    return FrameLabels(frame, tuple(obj_ids), np.array(masks, bool))


def test_frame_changes_replace_the_objects_own_pixels_and_keep_other_objects():
    existing = np.array([[1, 1, 0, 5], [0, 5, 0, 0]])
    new_mask = np.array([[0, 0, 1, 1], [0, 1, 1, 0]], bool)
    rows, cols, values = frame_changes(existing, frame_result(0, [1], new_mask))
    result = existing.copy()
    result[rows, cols] = values
    # object 1 moved: its old pixels are cleared, it takes the background, object 5 keeps its pixels
    assert result.tolist() == [[0, 0, 1, 5], [0, 5, 1, 0]]
    rows, cols, values = frame_changes(existing, frame_result(0, [1], new_mask), overwrite_others=True)
    result = existing.copy()
    result[rows, cols] = values
    assert result.tolist() == [[0, 0, 1, 1], [0, 1, 1, 0]]


def test_a_run_is_written_as_one_undo_step():
    image = Image(np.zeros((3, 4, 5)))
    labels = Labels(np.zeros((3, 4, 5), np.int32))
    labels.data[1, 0, 0] = 9  # another object, drawn by hand
    plane = stack_plane(image, 0, (0, 0, 0))
    run = LabelsRun(labels, plane)
    for frame in range(3):
        run.write(frame_result(frame, [2], np.ones((4, 5), bool)))
    run.finish()
    assert (labels.data == 2).sum() == 3 * 20 - 1 and labels.data[1, 0, 0] == 9
    labels.undo()
    assert (labels.data == 2).sum() == 0 and labels.data[1, 0, 0] == 9


def paint_stroke(labels, coords, value):
    """A brush stroke as napari records it: several paint calls, one undo item."""
    with labels.block_history():
        for coord in coords:
            labels.paint(coord, value, refresh=False)


def test_a_run_owns_its_writes_the_users_history_stays_and_the_run_is_one_item_on_top():
    image = Image(np.zeros((4, 12, 12)))
    labels = Labels(np.zeros((4, 12, 12), np.int32))
    labels.brush_size = 1
    paint_stroke(labels, [(0, 10, 10), (0, 10, 11)], 7)  # the user's stroke before the run
    labels.mode = "paint"
    before_run = labels.data.copy()
    run = LabelsRun(labels, stack_plane(image, 0, (0, 0, 0)))
    assert not labels.editable and str(labels.mode) == "pan_zoom", "locked while the run writes"
    for frame in range(4):
        run.write(frame_result(frame, [2], np.pad(np.ones((3, 3), bool), ((2, 7), (2, 7)))))
    run.write(frame_result(1, [2], np.pad(np.ones((4, 4), bool), ((2, 6), (2, 6)))))  # a frame yielded twice
    labels.undo()  # Ctrl-Z while the run writes does nothing: the history is set aside
    assert (labels.data == 2).sum() == 3 * 9 + 16
    run.finish()
    assert labels.editable and str(labels.mode) == "paint"
    after_run = labels.data.copy()
    paint_stroke(labels, [(2, 0, 0), (2, 0, 1)], 5)  # the user's stroke after the run
    labels.undo()
    np.testing.assert_array_equal(labels.data, after_run)  # only the stroke went
    labels.undo()
    np.testing.assert_array_equal(labels.data, before_run)  # the whole run went, in one step
    labels.undo()
    assert not labels.data.any()  # and the stroke before it is still undoable
    labels.redo()
    labels.redo()
    np.testing.assert_array_equal(labels.data, after_run)


def test_a_run_whose_layer_data_was_replaced_writes_nothing_more():
    image = Image(np.zeros((3, 6, 6)))
    labels = Labels(np.zeros((3, 6, 6), np.int32))
    run = LabelsRun(labels, stack_plane(image, 0, (0, 0, 0)))
    run.write(frame_result(0, [1], np.ones((6, 6), bool)))
    labels.data = np.zeros((3, 8, 8), np.int32)
    assert "changed shape" in run.problem()
    with pytest.raises(InputError, match="changed shape"):
        run.write(frame_result(1, [1], np.ones((6, 6), bool)))
    run.finish()
    assert labels.editable and not labels.data.any()


def test_label_ids_that_do_not_fit_the_layer_are_refused_before_anything_is_written():
    image = Image(np.zeros((2, 4, 4)))
    labels = Labels(np.zeros((2, 4, 4), np.uint8))
    run = LabelsRun(labels, stack_plane(image, 0, (0, 0, 0)))
    for obj_id in (256, 300):
        with pytest.raises(InputError, match=f"Object id {obj_id} does not fit.*Convert data type"):
            run.write(frame_result(0, [obj_id], np.ones((4, 4), bool)))
    run.write(frame_result(0, [255], np.ones((4, 4), bool)))
    run.finish()
    assert set(np.unique(labels.data)) == {0, 255}
    assert check_ids_fit_layer([255], labels) is None
    assert largest_id(np.uint8) == 255 and largest_id(np.int64) == 2**31 - 1


def test_removing_an_object_clears_it_on_every_slice_in_one_undo_step():
    labels = Labels(np.zeros((3, 4, 4), np.int32))
    labels.data[:, :2] = 4
    labels.data[:, 2:] = 1
    assert remove_object_labels(labels, 4) == 3 * 8
    assert not (labels.data == 4).any() and (labels.data == 1).sum() == 3 * 8
    labels.undo()
    assert (labels.data == 4).sum() == 3 * 8


def test_non_overlap_rule():
    logits = np.array([[[2.0, -1.0, 3.0]], [[1.0, 4.0, 5.0]]])
    assert highest_logit_wins(logits).tolist() == [[[True, False, False]], [[False, True, True]]]
