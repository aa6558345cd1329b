from array import array

import numpy as np

class CellLayout:
    args: tuple
    def __init__(
        self,
        resolutions_ms: tuple[int, ...],
        bands: tuple[tuple[tuple[int, int], ...], ...],
        next_band: tuple[int, ...],
        n_types: int,
        history_res: int,
        all_index: int,
        recency_table: tuple[int, ...],
        following: tuple[int, ...],
        bases: tuple[tuple[int, ...], ...],
        recency_offset: int,
        history_index: int,
    ) -> None: ...

def advance_cells(
    layout: CellLayout, cells: list[array], band_tags: array, band_sums: array, clock: int, now: int
) -> set[int]: ...
def apply_counts(
    layout: CellLayout,
    cells: list[array],
    band_tags: array,
    band_sums: array,
    last: array,
    clock: int,
    ts: int,
    type_index: int,
    counts: dict[int, list[int]],
    changed: set[int],
) -> None: ...
def count_run(groups: list[tuple[int, ...]], cents: list[int], n_groups: int) -> dict[int, list[int]]: ...
def advance_state(
    layout: CellLayout,
    cells: list[array],
    band_tags: array,
    band_sums: array,
    last: array,
    clock: int,
    now: int,
) -> set[int]: ...
def write_features(layout: CellLayout, states: list, rows: np.ndarray) -> None: ...
def next_changes(layout: CellLayout, states: list) -> list[int | None]: ...
