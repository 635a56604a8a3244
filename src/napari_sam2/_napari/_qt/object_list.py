"""The SAM2 widget's list of objects: one row per object (its id on its label colour, the slices it has prompts on);
selecting a row makes it the current object. A small Qt table inside a magicgui Container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from magicgui.widgets import Container
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem


@dataclass(frozen=True)
class ObjectRow:
    obj_id: int
    colour: tuple  # RGBA, 0 to 1
    slices: tuple[int, ...]  # slices with prompts (empty: no clicks yet)


def slices_text(slices: tuple[int, ...]) -> str:
    """'3', '3, 7', '2-5, 9': prompted slices, runs shortened."""
    if not slices:
        return "no clicks yet"
    runs, start, previous = [], slices[0], slices[0]
    for value in list(slices[1:]) + [None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        runs.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ", ".join(runs)


class ObjectList(Container):
    """The table of objects. ``on_select(obj_id)`` is called when the user picks a row."""

    def __init__(self, on_select: Callable[[int], None]):
        super().__init__(labels=False)
        self._on_select = on_select
        self._updating = False
        self.rows: list[ObjectRow] = []
        table = QTableWidget(0, 2)
        table.setHorizontalHeaderLabels(["Object", "Prompted slices"])
        table.verticalHeader().setVisible(False)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        table.setMinimumHeight(90)
        table.setMaximumHeight(150)
        table.itemSelectionChanged.connect(self._selection_changed)
        self.table = table
        self.native.layout().addWidget(table)

    def set_rows(self, rows: list[ObjectRow], current: int | None) -> None:
        """Show ``rows``, with the row of ``current`` selected."""
        self._updating = True
        try:
            self.rows = list(rows)
            self.table.setRowCount(len(rows))
            for index, row in enumerate(rows):
                id_item = QTableWidgetItem(str(row.obj_id))
                id_item.setIcon(_swatch(row.colour))
                id_item.setData(Qt.ItemDataRole.UserRole, int(row.obj_id))
                self.table.setItem(index, 0, id_item)
                self.table.setItem(index, 1, QTableWidgetItem(slices_text(row.slices)))
            self.select(current)
        finally:
            self._updating = False

    def select(self, obj_id: int | None) -> None:
        was = self._updating
        self._updating = True
        try:
            self.table.clearSelection()
            for index, row in enumerate(self.rows):
                if row.obj_id == obj_id:
                    self.table.selectRow(index)
                    break
        finally:
            self._updating = was

    @property
    def selected(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.rows[rows[0].row()].obj_id

    def _selection_changed(self) -> None:
        if self._updating:
            return
        obj_id = self.selected
        if obj_id is not None:
            self._on_select(obj_id)


def _swatch(colour) -> QIcon:
    rgba = (np.clip(np.asarray(colour, float).reshape(-1)[:4], 0, 1) * 255).round().astype(int)
    pixmap = QPixmap(14, 14)
    pixmap.fill(QColor(int(rgba[0]), int(rgba[1]), int(rgba[2]), 255))
    return QIcon(pixmap)
