# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The clock moves of the state machine's cells, compiled (issue #15).

``CustomerState._advance_cells`` ran as Python, cell by cell: about a fifth
of the dataflow thread of a replay (BENCHMARKS.md 6z). The arrays and the
rule are those of ``stream.state`` (its module docstring has the layout):
when the clock moves from ``clock`` to ``now``, the cells older than a
window's oldest bucket leave it, their ``n, cents`` move from the window's
band to the next longer window's (or go, with the cells, past the longest).
This module only does that walk in C over the same ``array('q')``s
(searches and sums in C; a cell or record added or dropped through the
array's own methods, so the arrays grow and shrink as before);
``stream.state`` stays the one definition of what it means, and the tests
hold this walk to the Python rule it replaced (``tests/stream/test_cells.py``).

Cython over a hand-written C extension: it reads like the Python it
replaces and gives C access to ``array.array`` (``cpython.array``).
Integer division is Python's (floor, ``cdivision`` off); a bucket becomes
a tag by multiplying (C's ``<<`` of a negative number is undefined) and a
tag its bucket by ``>>``, arithmetic for signed integers in GCC and Clang
(``floor``, as Python's), so clocks before 1970 walk the same.
"""

from cpython cimport array
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc

cdef long long KEY_BITS = 16  # stream.state's: a tag is (bucket or window) << KEY_BITS | key
cdef long long KEY_MASK = (1 << 16) - 1
cdef long long KEY_SPAN = 1 << 16
DEF MAX_RES = 8
DEF MAX_BANDS = 8
DEF MAX_WINDOWS = 64


cdef class CellLayout:
    """What the walks need of a ``StateConfig``, as C values: per resolution its size and bands, per window
    the next band, the recency bins, ``history_days``' resolution and the index of ``all``."""

    cdef readonly tuple args
    cdef int n_res
    cdef long long n_types
    cdef int history_res
    cdef long long all_index
    cdef array.array recency  # whole days -> their bin edge, up to the cap (``StateConfig.recency_table``)
    cdef array.array following  # whole days -> the next bin edge, below the cap (``StateConfig.following_array``)
    cdef array.array bases  # (window, key) -> the feature index of its count (``StateConfig.bases``), flat
    cdef Py_ssize_t n_keys, recency_offset, history_index
    cdef long long res_ms[MAX_RES]
    cdef int n_bands[MAX_RES]
    cdef long long band_buckets[MAX_RES][MAX_BANDS]
    cdef int band_window[MAX_RES][MAX_BANDS]
    cdef int next_band[MAX_WINDOWS]

    def __init__(
        self, tuple resolutions_ms, tuple bands, tuple next_band, long long n_types, int history_res,
        long long all_index, tuple recency_table, tuple following, tuple bases, Py_ssize_t recency_offset,
        Py_ssize_t history_index,
    ):
        if len(resolutions_ms) > MAX_RES or len(next_band) > MAX_WINDOWS or any(len(b) > MAX_BANDS for b in bands):
            msg = (
                f"{len(resolutions_ms)} bucket sizes and {len(next_band)} windows exceed the compiled layout's "
                f"{MAX_RES} sizes of up to {MAX_BANDS} windows each"
            )
            raise ValueError(msg)
        self.args = (
            resolutions_ms, bands, next_band, n_types, history_res, all_index, recency_table, following, bases,
            recency_offset, history_index,
        )
        self.following = array.array("q", following)
        self.n_keys = len(bases[0]) if bases else 0
        self.bases = array.array("q", [i for window in bases for i in window])
        self.recency_offset = recency_offset
        self.history_index = history_index
        self.n_res = len(resolutions_ms)
        self.n_types = n_types
        self.history_res = history_res
        self.all_index = all_index
        self.recency = array.array("q", recency_table)
        for ri, res in enumerate(resolutions_ms):
            self.res_ms[ri] = res
            self.n_bands[ri] = len(bands[ri])
            for b, (n_buckets, wi) in enumerate(bands[ri]):
                self.band_buckets[ri][b] = n_buckets
                self.band_window[ri][b] = wi
        for wi, into in enumerate(next_band):
            self.next_band[wi] = into

    def __reduce__(self):
        return (CellLayout, self.args)


cdef inline Py_ssize_t lower_bound(long long* a, Py_ssize_t lo, Py_ssize_t hi, long long x) noexcept:
    """``bisect_left(a, x, lo, hi)``."""
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t find(array.array tags, long long tag) noexcept:
    """``tags.index(tag)``, or -1."""
    cdef long long* t = tags.data.as_longlongs
    cdef Py_ssize_t j, n = len(tags)
    for j in range(n):
        if t[j] == tag:
            return j
    return -1


cdef int leave_band(
    array.array a, Py_ssize_t m, Py_ssize_t i0, Py_ssize_t i1, long long wi, long long into,
    array.array band_tags, array.array band_sums, set changed, long long n_types,
) except -1:
    """Cells ``i0:i1`` of ``a`` (``m`` cells) leave window ``wi``: their band moves to ``into``, or they go (-1)."""
    cdef long long band_base = wi * KEY_SPAN
    cdef long long into_base = into * KEY_SPAN
    cdef long long key, n, cents
    cdef Py_ssize_t i, j
    cdef long long* s
    cdef long long* t
    cdef long long* c
    for i in range(i0, i1):
        c = a.data.as_longlongs
        key = c[i] & KEY_MASK
        n = c[m + 2 * i]
        cents = c[m + 2 * i + 1]
        j = find(band_tags, band_base | key)
        if j < 0:
            msg = f"no band record of window {wi} for counter key {key}: the state is damaged"
            raise ValueError(msg)
        s = band_sums.data.as_longlongs
        if s[3 * j] == n:  # the band's last cell of this key
            del band_tags[j]
            del band_sums[3 * j : 3 * j + 3]
        else:
            s[3 * j] -= n
            s[3 * j + 1] -= cents
            s[3 * j + 2] -= 1
        changed.add(key // n_types)
        if into >= 0:
            j = find(band_tags, into_base | key)
            if j >= 0:
                s = band_sums.data.as_longlongs
                s[3 * j] += n
                s[3 * j + 1] += cents
                s[3 * j + 2] += 1
            else:
                band_tags.append(into_base | key)
                band_sums.extend((n, cents, 1))
    if into < 0:  # out of every window of its resolution: drop the cells (their values first)
        del a[m + 2 * i0 : m + 2 * i1]
        del a[i0:i1]
    return 0


def advance_cells(
    CellLayout layout, list cells, array.array band_tags, array.array band_sums, long long clock, long long now
):
    """The cells of every resolution leave the windows they fall out of as the clock moves on; the groups changed.

    ``stream.state.CustomerState._advance_cells`` without its ``history_days`` part.
    """
    cdef set changed = set()
    cdef int ri, b
    cdef long long res, hi_before, hi_after, n_buckets, new_lo
    cdef Py_ssize_t m, i0, i1
    cdef array.array a
    cdef long long* c
    check_arrays(layout, cells, band_tags, band_sums, None)
    for ri in range(layout.n_res):
        res = layout.res_ms[ri]
        hi_before = clock // res
        hi_after = now // res
        if hi_before == hi_after:
            continue
        a = cells[ri]
        for b in range(layout.n_bands[ri]):  # shortest first: a cell leaving two windows moves on twice
            n_buckets = layout.band_buckets[ri][b]
            new_lo = hi_after - n_buckets + 1
            c = a.data.as_longlongs
            if len(a) == 0 or c[0] >> KEY_BITS >= new_lo:
                break  # nothing leaves this window, nor any longer one
            m = len(a) // 3
            i0 = lower_bound(c, 0, m, (hi_before - n_buckets + 1) * KEY_SPAN)
            i1 = lower_bound(c, i0, m, new_lo * KEY_SPAN)
            if i0 < i1:
                leave_band(
                    a, m, i0, i1, layout.band_window[ri][b], layout.next_band[layout.band_window[ri][b]],
                    band_tags, band_sums, changed, layout.n_types,
                )
    return changed


cdef inline long long recency_bin(array.array table, long long days) except? -1:
    """``StateConfig.recency_bin``: ``table[days]``, the last edge past it (a negative index as Python's)."""
    cdef Py_ssize_t n = len(table)
    if days < 0:  # not in a sound state: every time it keeps is at most its clock
        days += n
        if days < 0:
            raise IndexError("recency table index out of range")
    return table.data.as_longlongs[days if days < n else n - 1]


cdef int check_arrays(
    CellLayout layout, list cells, array.array band_tags, array.array band_sums, array.array last
) except -1:
    """Refuse arrays the walks would read past (``last`` None: not read): one line, not a crash."""
    cdef array.array a
    cdef bint sound = len(cells) == layout.n_res and len(band_sums) == 3 * len(band_tags)
    if last is not None and len(last) % 2:
        sound = False
    for a in cells:
        if len(a) % 3:
            sound = False
    if not sound:
        msg = (
            f"customer state arrays do not fit the layout ({len(cells)} cell arrays for {layout.n_res} bucket sizes, "
            f"{len(band_sums)} band sums for {len(band_tags)} tags): the state is damaged"
        )
        raise ValueError(msg)
    return 0


def apply_counts(
    CellLayout layout, list cells, array.array band_tags, array.array band_sums, array.array last,
    long long clock, long long ts, long long type_index, dict counts, set changed,
):
    """Count a run of events of one time ``ts`` and type (``counts``: group -> [events, cents]) at ``clock``.

    ``stream.state.CustomerState.apply_run`` after its clock move: each
    resolution's cell of every group gets the run (a new cell where there is
    none, in tag order) and so does the band of the shortest window holding
    it; each group's last event time moves on. Adds the groups whose
    features changed to ``changed``.
    """
    cdef int ri, b, band
    cdef long long res, bucket, age, key, tag, btag, n, cents, base, band_base, g, prev, day_ms = 86_400_000
    cdef Py_ssize_t m, i, j, k
    cdef long long new_cell
    cdef bint in_window = False
    cdef array.array a
    cdef long long* c
    cdef long long* t
    check_arrays(layout, cells, band_tags, band_sums, last)
    for ri in range(layout.n_res):
        res = layout.res_ms[ri]
        bucket = ts // res
        age = clock // res - bucket
        band = -1
        for b in range(layout.n_bands[ri]):  # the shortest window of this resolution that holds the bucket
            if age < layout.band_buckets[ri][b]:
                band = layout.band_window[ri][b]
                break
        if band < 0:
            continue  # older than every window of this resolution: nothing to keep
        in_window = True
        a = cells[ri]
        m = len(a) // 3  # cells: a[:m] tags, a[m:] their (n, cents)
        if ri == layout.history_res and age > 0 and (m == 0 or bucket < a.data.as_longlongs[0] >> KEY_BITS):
            changed.add(layout.all_index)  # history_days now reaches further back
        base = bucket * KEY_SPAN
        band_base = band * KEY_SPAN
        for group, run in counts.items():
            g = group
            n = run[0]
            cents = run[1]
            key = g * layout.n_types + type_index
            tag = base | key
            c = a.data.as_longlongs
            i = lower_bound(c, 0, m, tag)
            if i < m and c[i] == tag:
                c[m + 2 * i] += n
                c[m + 2 * i + 1] += cents
                new_cell = 0
            else:
                a.insert(i, tag)
                m += 1
                a.insert(m + 2 * i, cents)
                a.insert(m + 2 * i, n)
                new_cell = 1
            btag = band_base | key
            j = find(band_tags, btag)
            if j >= 0:
                t = band_sums.data.as_longlongs
                t[3 * j] += n
                t[3 * j + 1] += cents
                t[3 * j + 2] += new_cell
            else:
                band_tags.append(btag)
                band_sums.extend((n, cents, 1))
    if in_window:
        changed.update(counts)
    k = len(last) >> 1  # groups, then their last event times
    for group in counts:
        g = group
        t = last.data.as_longlongs
        j = -1
        for i in range(k):
            if t[i] == g:
                j = i
                break
        if j >= 0 and ts <= t[k + j]:
            continue
        if not in_window:
            if j < 0:
                changed.add(group)
            else:
                prev = t[k + j]
                if recency_bin(layout.recency, (clock - ts) // day_ms) != recency_bin(
                    layout.recency, (clock - prev) // day_ms
                ):
                    changed.add(group)
        if j >= 0:
            t[k + j] = ts
        else:  # a new group at the end of the first half, its time at the end of the second
            last.insert(k, g)
            last.append(ts)
            k += 1


def count_run(list groups, list cents, Py_ssize_t n_groups):
    """A run's ``counts`` for ``apply_counts``: group -> [events, cents], the groups in the order first met.

    ``groups[i]`` (a tuple of group indices below ``n_groups``) and
    ``cents[i]`` are the run's i-th event's. ``stream.apply.apply_events``
    counted this in Python, a dictionary lookup per event and group; here
    the sums are C integers and the dictionary is built once per run.
    """
    if len(cents) != len(groups):
        raise ValueError(f"{len(groups)} events' groups but {len(cents)} events' cents")
    cdef long long* n = <long long*> PyMem_Calloc(2 * n_groups + 1, sizeof(long long))
    cdef Py_ssize_t* order = <Py_ssize_t*> PyMem_Malloc((n_groups + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t i, k, met = 0
    cdef long long g, c
    cdef dict counts = {}
    if n == NULL or order == NULL:
        PyMem_Free(n)
        PyMem_Free(order)
        raise MemoryError()
    try:
        for i in range(len(groups)):
            c = cents[i]
            for group in <tuple> groups[i]:
                g = group
                if g < 0 or g >= n_groups:
                    raise ValueError(f"group {g} of an event is beyond the layout's {n_groups} groups")
                if n[2 * g] == 0:
                    order[met] = g
                    met += 1
                n[2 * g] += 1
                n[2 * g + 1] += c
        for k in range(met):
            g = order[k]
            counts[g] = [n[2 * g], n[2 * g + 1]]
        return counts
    finally:
        PyMem_Free(n)
        PyMem_Free(order)


cdef inline long long history_start(CellLayout layout, list cells, bint *found) noexcept:
    """``CustomerState.history_start``: the start (ms) of the oldest bucket of the longest window, if any."""
    cdef array.array a = cells[layout.history_res]
    found[0] = len(a) > 0
    if not found[0]:
        return 0
    return (a.data.as_longlongs[0] >> KEY_BITS) * layout.res_ms[layout.history_res]


def advance_state(
    CellLayout layout, list cells, array.array band_tags, array.array band_sums, array.array last,
    long long clock, long long now,
):
    """A customer's clock move from ``clock`` to ``now`` (later), but for the clock and sequence; the groups changed.

    ``stream.state.CustomerState._advance``: the cells leave the windows they
    fall out of (``advance_cells``); ``history_days`` (of ``all``) changes
    when its oldest bucket goes or its whole days since reach another bin;
    a group's recency when its whole days since its last event reach another
    bin, and a group whose recency reaches the cap is forgotten (capped
    equals "never"), the others keeping their order.
    """
    cdef bint had = False, has = False
    check_arrays(layout, cells, band_tags, band_sums, last)
    cdef long long start = history_start(layout, cells, &had), after
    cdef set changed = advance_cells(layout, cells, band_tags, band_sums, clock, now)
    cdef array.array table = layout.recency
    cdef long long cap = table.data.as_longlongs[len(table) - 1], day_ms = 86_400_000
    cdef long long since, d0, d1, after_bin, before_bin
    cdef Py_ssize_t k, j, kept = 0
    cdef long long* t
    if had:
        after = history_start(layout, cells, &has)
        if (not has or after != start or recency_bin(table, (clock - start) // day_ms)
                != recency_bin(table, (now - start) // day_ms)):
            changed.add(layout.all_index)  # history_days belongs to ``all``
    k = len(last) >> 1  # groups, then their last event times
    t = last.data.as_longlongs
    for j in range(k):
        since = t[k + j]
        d0 = (clock - since) // day_ms
        d1 = (now - since) // day_ms
        if d0 != d1:
            after_bin = recency_bin(table, d1)
            before_bin = recency_bin(table, d0)
            if before_bin != after_bin:
                changed.add(t[j])
            if after_bin == cap:
                continue  # capped recency equals "never": forget it
        t[kept] = t[j]
        t[k + kept] = since
        kept += 1
    if kept < k:  # the kept groups' times follow them: first half, then second
        for j in range(kept):
            t[kept + j] = t[k + j]
        del last[2 * kept:]
    return changed


def write_features(CellLayout layout, list states, double[:, ::1] rows):
    """Write each state's features into its row of ``rows`` (each from ``StateConfig.new_row()``).

    A state that is None or has no clock (no history) leaves its row blank.

    ``stream.state.write_rows``: per resolution, its windows' sums are its
    bands' accumulated shortest first (a window is its own band plus the
    shorter windows'), written as count, ``cents / 100`` (IEEE division of
    the cents as a double, as numpy's) and active, for every key counted;
    then, for a state with a clock, each remembered group's recency and
    ``history_days`` (whole days since, rounded down to a bin edge).
    """
    cdef Py_ssize_t n_keys = layout.n_keys, i, r, nb, key, touched, x, w
    cdef long long* acc = <long long*> PyMem_Calloc(3 * n_keys + 1, sizeof(long long))
    cdef Py_ssize_t* keys = <Py_ssize_t*> PyMem_Malloc((n_keys + 1) * sizeof(Py_ssize_t))
    cdef char* seen = <char*> PyMem_Calloc(n_keys + 1, 1)
    cdef long long* tags
    cdef long long* sums
    cdef long long* bases = layout.bases.data.as_longlongs
    cdef double* row
    cdef int ri, b, wi
    cdef array.array band_tags, band_sums
    if acc == NULL or keys == NULL or seen == NULL:
        PyMem_Free(acc)
        PyMem_Free(keys)
        PyMem_Free(seen)
        raise MemoryError
    try:
        for i in range(len(states)):
            state = states[i]
            if state is None or state.clock is None:
                continue  # a customer with no history: the blank row
            row = &rows[i, 0]
            band_tags = state._band_tags
            band_sums = state._band_sums
            check_arrays(layout, state._cells, band_tags, band_sums, state._last)
            nb = len(band_tags)
            tags = band_tags.data.as_longlongs
            sums = band_sums.data.as_longlongs
            for ri in range(layout.n_res if nb else 0):
                touched = 0
                for b in range(layout.n_bands[ri]):  # shortest first: a window adds its band to the shorter ones'
                    wi = layout.band_window[ri][b]
                    for r in range(nb):
                        if tags[r] >> KEY_BITS == wi:
                            key = tags[r] & KEY_MASK
                            if key >= n_keys:
                                msg = f"a band record of counter key {key} of {n_keys}: the state is damaged"
                                raise ValueError(msg)
                            if not seen[key]:
                                seen[key] = 1
                                keys[touched] = key
                                touched += 1
                            acc[3 * key] += sums[3 * r]
                            acc[3 * key + 1] += sums[3 * r + 1]
                            acc[3 * key + 2] += sums[3 * r + 2]
                    for x in range(touched):
                        key = keys[x]
                        if acc[3 * key]:
                            w = bases[wi * n_keys + key]
                            row[w] = acc[3 * key]
                            row[w + 1] = <double> acc[3 * key + 1] / 100.0
                            row[w + 2] = acc[3 * key + 2]
                for x in range(touched):
                    key = keys[x]
                    seen[key] = 0
                    acc[3 * key] = acc[3 * key + 1] = acc[3 * key + 2] = 0
            write_recency(layout, state._last, state._cells, state.clock, row)
    finally:
        PyMem_Free(acc)
        PyMem_Free(keys)
        PyMem_Free(seen)


cdef int write_recency(CellLayout layout, array.array last, list cells, long long clock, double* row) except -1:
    """Each remembered group's recency and ``history_days`` as of ``clock``: whole days since, as a bin edge."""
    cdef Py_ssize_t k = len(last) >> 1, j
    cdef long long* t = last.data.as_longlongs
    cdef long long day_ms = 86_400_000
    cdef bint found
    cdef long long start
    for j in range(k):
        if not 0 <= t[j] <= layout.all_index:
            msg = f"a last event time of group {t[j]} of {layout.all_index + 1}: the state is damaged"
            raise ValueError(msg)
        row[layout.recency_offset + t[j]] = recency_bin(layout.recency, (clock - t[k + j]) // day_ms)
    if cells:
        start = history_start(layout, cells, &found)
        if found:
            row[layout.history_index] = recency_bin(layout.recency, (clock - start) // day_ms)
    return 0


def next_changes(CellLayout layout, list states):
    """Per state, the earliest clock time at which a feature changes without a new event (None: never).

    ``stream.state.next_changes``: a cell leaving a window (a state's cells
    ascend by bucket: the first one inside a window is the next to leave
    it), or the whole days since a group's last event, or since
    ``history_days``' start, reaching the next recency bin edge.
    """
    cdef list out = [None] * len(states)
    cdef Py_ssize_t i, m, at, k, j, n_following = len(layout.following)
    cdef long long clock, best, res, lo, when, since, days, start
    cdef long long never = 0x7FFFFFFFFFFFFFFF, day_ms = 86_400_000
    cdef long long* following = layout.following.data.as_longlongs
    cdef long long* c
    cdef long long* t
    cdef int ri, b
    cdef bint found
    cdef array.array a, last
    cdef list cells
    for i in range(len(states)):
        state = states[i]
        if state.clock is None:
            continue
        clock = state.clock
        best = never
        cells = state._cells
        last = state._last
        check_arrays(layout, cells, state._band_tags, state._band_sums, last)
        for ri in range(layout.n_res):
            a = cells[ri]
            m = len(a) // 3
            if m == 0:
                continue
            c = a.data.as_longlongs
            res = layout.res_ms[ri]
            for b in range(layout.n_bands[ri]):
                lo = clock // res + 1 - layout.band_buckets[ri][b]  # the window's oldest bucket
                at = lower_bound(c, 0, m, lo * KEY_SPAN)
                if at < m:
                    when = ((c[at] >> KEY_BITS) + layout.band_buckets[ri][b]) * res
                    if when < best:
                        best = when
        k = len(last) >> 1
        t = last.data.as_longlongs
        for j in range(k + 1):
            if j < k:
                since = t[k + j]
            else:
                since = history_start(layout, cells, &found)
                if not found:
                    break
            days = (clock - since) // day_ms
            if days < n_following:  # past the cap: no edge ahead
                when = since + (following[days] if days >= 0 else 0) * day_ms
                if when < best:
                    best = when
        if best != never:
            out[i] = best
    return out
