# cython: language_level=3
"""The C risk book: the structs ``cext.engine.Engine`` keeps its state in, and their helpers.

Every struct mirrors one class of ``checks.state`` field for field (same names, same units:
money in integer fen, time in integer nanoseconds), so ``Engine.snapshot()`` can rebuild the
reference's plain-data view from it. The book is dense and indexed by interned ids:

- ``Account[n_accounts]`` and ``Instrument[n_instruments]``;
- ``Position[n_accounts * n_instruments]``  (account-major: ``a * n_instruments + i``);
- ``ProductCounters[n_accounts * n_products]`` (with the account's product allow-list);
- ``GroupInstrument[n_groups * n_instruments]``: the group's daily opening volume and its
  resting orders by price level (the self-trade index);
- ``Order[n_slots]``: the order pool; a slot's ``gen`` is the high half of its reference.

The helpers below are ``inline`` so that they compile into the engine itself: a rolling window
is a ring of the most recent timestamps (exact and O(1), like ``checks.state.recent``), a price
level book is a small sorted array, and ``floordiv``/``floormod`` give Python's semantics for
the calendar arithmetic (the extension is built with ``cdivision``).
"""

from libc.math cimport fabs
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc, realloc


cdef extern from *:
    """
    typedef __int128 fk_int128;

    /* Name -> index tables for account ids and symbols: open addressing on the str's cached
       hash, a hit decided by identity or by equal length, kind and bytes -- exactly when a
       dict lookup with an exact str would find the key, at a fraction of the instructions.
       A slot is 32 bytes and holds a short name's bytes itself, so a probe touches one cache
       line of a small table and never the key object; longer names compare with keys[idx]. */
    typedef struct {
        Py_hash_t hash; int32_t idx1; uint16_t length; uint8_t kind; char data[17];
    } fk_name_slot;  /* idx1 = index + 1; 0: an empty slot */
    static inline int fk_name_inline(Py_ssize_t length, int kind) {
        return length * kind <= 17;
    }
    static inline int fk_name_fill(fk_name_slot* e, PyObject* key, long long idx) {
        Py_hash_t h = PyObject_Hash(key);
        if (h == -1) return -1;
        e->hash = h; e->idx1 = (int32_t)(idx + 1);
        e->length = (uint16_t)PyUnicode_GET_LENGTH(key); e->kind = (uint8_t)PyUnicode_KIND(key);
        if (PyUnicode_GET_LENGTH(key) > 0xFFFF) e->length = 0xFFFF;  /* (compared via keys) */
        if (fk_name_inline(PyUnicode_GET_LENGTH(key), PyUnicode_KIND(key)))
            memcpy(e->data, PyUnicode_DATA(key), PyUnicode_GET_LENGTH(key) * PyUnicode_KIND(key));
        return 0;
    }
    static inline Py_hash_t fk_str_hash(PyObject* s) {
        Py_hash_t h = ((PyASCIIObject*)s)->hash;
        if (h == -1) { h = PyObject_Hash(s); if (h == -1) PyErr_Clear(); }
        return h;
    }
    static inline void fk_name_prefetch(const fk_name_slot* table, size_t mask, PyObject* s) {
        __builtin_prefetch(&table[(size_t)fk_str_hash(s) & mask]);
    }
    static inline long long fk_name_lookup(const fk_name_slot* table, size_t mask,
                                           void* const* keys, PyObject* s) {
        Py_hash_t h = fk_str_hash(s);
        Py_ssize_t length;
        int kind;
        size_t j;
        if (h == -1) return -1;
    #if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(s) == -1) { PyErr_Clear(); return -1; }
    #endif
        length = PyUnicode_GET_LENGTH(s);
        kind = PyUnicode_KIND(s);
        for (j = (size_t)h & mask;; j = (j + 1) & mask) {
            const fk_name_slot* e = &table[j];
            PyObject* key;
            if (e->idx1 == 0) return -1;
            if (e->hash != h || e->kind != kind) continue;
            if (fk_name_inline(length, kind)) {  /* a short name: compare in place */
                const char* a = e->data;
                const char* c = (const char*)PyUnicode_DATA(s);
                Py_ssize_t n = length * kind, k = 0;
                if (e->length != length) continue;
                while (k < n && a[k] == c[k]) k++;
                if (k == n) return e->idx1 - 1;
                continue;
            }
            key = (PyObject*)keys[e->idx1 - 1];
            if (key == s || (PyUnicode_GET_LENGTH(key) == length
                             && memcmp(PyUnicode_DATA(key), PyUnicode_DATA(s), length * kind) == 0))
                return e->idx1 - 1;
        }
    }
    """
    ctypedef long long fk_int128  # 128-bit in C: products of money and lots never overflow
    ctypedef struct fk_name_slot:
        Py_hash_t hash
        int32_t idx1
    long long fk_name_lookup(const fk_name_slot* table, size_t mask, void** keys,
                             void* s) noexcept
    void fk_name_prefetch(const fk_name_slot* table, size_t mask, void* s) noexcept
    int fk_name_fill(fk_name_slot* e, object key, long long idx) except -1


cdef enum:
    SIDE_BUY = 1
    SIDE_SELL = 2
    OFF_OPEN = 1
    OFF_CLOSE_TODAY = 3
    HEDGE_HEDGE = 3
    ORD_MARKET = 2
    TIF_GFD = 1
    ST_PENDING_NEW = 1
    ST_NEW = 2
    ST_PARTIALLY_FILLED = 3
    ST_FILLED = 4
    ST_CANCELED = 5
    ST_REJECTED = 6
    ACCT_CLOSE_ONLY = 2
    ACCT_SUSPENDED = 3
    PROG_NONE = 0
    PROG_CONFIRMED = 2
    KILL_BLOCK = 1
    KILL_CLOSE_ONLY = 2

cdef extern from *:
    """
    #define FK_UNLIMITED (((long long)1) << 60)
    #define FK_NS_PER_S 1000000000LL
    #define FK_NO_BUY (-1LL)
    """
    const int64_t UNLIMITED "FK_UNLIMITED"   # checks.model.UNLIMITED
    const int64_t NS_PER_S "FK_NS_PER_S"
    const int64_t NO_BUY "FK_NO_BUY"          # checks.state.NO_BUY; NO_SELL is UNLIMITED


cdef struct Ring:
    # The newest ``count`` timestamps, oldest at ``head``; grows to ``maxlen`` on demand (a
    # limit of a million per second must not cost 8 MB per account up front).
    int64_t* buf
    int64_t maxlen
    int64_t size
    int64_t count
    int64_t head


cdef enum:
    REPEAT_KEYS = 8  # checks.state.REPEAT_KEYS: distinct order keys tracked for repeats


cdef enum:
    LEVELS_INLINE = 2  # price levels kept in the struct itself: a group rests at a price or two


cdef struct Levels:
    # Resting orders of one side by price in ticks, ascending, as (ticks, count) pairs: in
    # ``inline_`` while they fit (no pointer to chase on the hot path), else in ``heap``.
    int64_t* heap
    int32_t n
    int32_t cap  # pairs the heap holds; 0 while inline
    int64_t inline_[2 * LEVELS_INLINE]


cdef struct Account:
    int64_t group
    int64_t status
    int64_t programmatic
    bint hft_registered
    bint direct_access
    bint restricted  # a product allow-list applies (see Engine.allowed)
    bint market_ok
    bint limit_ok
    int64_t hft_max_per_sec
    int64_t hft_max_per_day
    # funds, in fen
    int64_t balance
    int64_t frozen_margin
    int64_t frozen_fee
    int64_t used_margin
    int64_t paid_fee
    int64_t realised
    int64_t unrealised
    int64_t pnl_base  # realised + unrealised - paid_fee at the start of the trading day
    # daily counters and flags
    int64_t open_orders
    int64_t day_msgs
    int64_t occasions
    bint programmatic_flagged
    bint hft_flagged
    bint loss_warned
    bint loss_stopped
    # limits (checks.state.AccountState.set_limits)
    int64_t max_order_qty
    double max_notional
    int64_t max_orders_per_sec
    int64_t max_cancels_per_sec
    int64_t max_open_orders
    int64_t max_open_volume
    int64_t max_messages
    double max_otr
    int64_t otr_min_messages
    double message_fee
    int64_t message_fee_free
    int64_t max_repeats
    int64_t repeat_window
    int64_t max_executions
    int64_t execution_window
    int64_t loss_limit
    int64_t programmatic_per_sec
    int64_t programmatic_occasions
    bint stop_programmatic
    double warn_fraction
    # warning levels (checks.decision.warn_level) of the limits above, at warn_fraction
    int64_t lvl_orders
    int64_t lvl_cancels
    int64_t lvl_open_volume
    int64_t lvl_open_orders
    int64_t lvl_messages
    int64_t lvl_hft_day  # of hft_max_per_day
    int64_t lvl_repeats
    int64_t lvl_executions
    double lvl_otr  # max_otr * warn_fraction (a ratio, not a count)
    # rolling windows
    Ring orders
    Ring cancels
    Ring msgs
    Ring execs
    # repeated-order detection (checks.state.repeat_slot): REPEAT_KEYS order keys
    # (instrument, side, offset, ticks, qty), each with the times of its recent orders
    Ring repeat_runs[REPEAT_KEYS]
    bint rk_used[REPEAT_KEYS]
    int64_t rk_inst[REPEAT_KEYS]
    int64_t rk_side[REPEAT_KEYS]
    int64_t rk_offset[REPEAT_KEYS]
    int64_t rk_ticks[REPEAT_KEYS]
    int64_t rk_qty[REPEAT_KEYS]
    int64_t rk_last[REPEAT_KEYS]  # the newest time in repeat_runs[k] (no ring read to choose)


cdef struct Instrument:
    int64_t product
    double multiplier
    double tick
    double upper
    double lower
    double ref_price
    double mark
    double margin_long
    double margin_short
    double margin_per_lot
    double open_per_lot
    double open_ratio
    double close_per_lot
    double close_ratio
    double close_today_per_lot
    double close_today_ratio
    int64_t per_order_fee
    int64_t per_cancel_fee
    int64_t min_limit_qty
    int64_t max_limit_qty
    int64_t min_market_qty
    int64_t max_market_qty
    int64_t position_limit
    double collar_pct
    int64_t collar_ticks
    int64_t cancel_limit
    int64_t large_qty
    int64_t large_cancel_limit
    int64_t self_trade_limit
    bint fak_counts_as_cancel
    bint market_ok
    bint close_today_distinct
    int64_t hft_per_sec
    int64_t hft_per_day
    int64_t sess_first  # this instrument's sessions: Engine.sessions[2*first : 2*(first+count)]
    int64_t sess_count
    int64_t n_holders  # accounts with a non-zero position (marked on market data)


cdef struct Position:
    # checks.state.PositionState.__slots__, in order
    int64_t long_td
    int64_t long_yd
    int64_t short_td
    int64_t short_yd
    int64_t long_td_frozen
    int64_t long_yd_frozen
    int64_t short_td_frozen
    int64_t short_yd_frozen
    int64_t long_pending
    int64_t short_pending
    int64_t long_cost
    int64_t short_cost
    int64_t long_margin
    int64_t short_margin
    int64_t unrealised
    int64_t cancels
    int64_t large_cancels
    int64_t self_trades
    bint holder


cdef struct ProductCounters:
    int64_t messages
    int64_t filled_orders


cdef struct GroupInstrument:  # two cache lines
    int64_t open_volume
    int64_t best_buy
    int64_t best_sell
    Levels buys
    Levels sells
    int64_t _pad


cdef struct Order:
    int64_t gen
    bint live
    int64_t acct
    int64_t inst
    int64_t side
    int64_t offset
    int64_t hedge
    int64_t ord_type
    int64_t tif
    double price
    int64_t ticks
    int64_t qty
    int64_t leaves
    int64_t cum
    int64_t status
    bint opening
    bint large
    int64_t frozen_margin
    int64_t frozen_fee
    int64_t close_yd
    int64_t close_td
    bint had_fill
    bint cancel_requested


# ---------------------------------------------------------------- arithmetic

cdef inline int64_t floordiv(int64_t a, int64_t b) noexcept nogil:
    """Python's ``a // b`` for ``b > 0``."""
    cdef int64_t q = a / b
    if a % b != 0 and a < 0:
        q -= 1
    return q


cdef inline int64_t floormod(int64_t a, int64_t b) noexcept nogil:
    """Python's ``a % b`` for ``b > 0``."""
    cdef int64_t r = a % b
    if r < 0:
        r += b
    return r


cdef inline int64_t muldiv(int64_t x, int64_t qty, int64_t total) noexcept nogil:
    """Python's ``x * qty // total`` (``total > 0``) without overflowing the product."""
    cdef fk_int128 p = <fk_int128>x * qty
    cdef fk_int128 q = p / total
    if p % total != 0 and p < 0:
        q -= 1
    return <int64_t>q


cdef inline double ffloor(double y) noexcept nogil:
    """``math.floor`` of a double, without a libm call: exact, since below 2**52 a double's
    integer part fits int64, and from there on every double is a whole number."""
    cdef double t
    if fabs(y) < 4503599627370496.0:
        t = <double><int64_t>y
        return t - 1.0 if t > y else t
    return y


cdef inline int64_t fen(double amount) noexcept nogil:
    """``checks.state.fen``: money in integer fen, rounded half up (amounts within int64)."""
    return <int64_t>ffloor(amount * 100.0 + 0.5)


cdef inline int64_t warn_level(int64_t limit, double fraction) noexcept nogil:
    """``checks.decision.warn_level``: int(limit * fraction), at least 1."""
    cdef int64_t level = <int64_t>(<double>limit * fraction)
    return level if level >= 1 else 1


# ---------------------------------------------------------------- rolling windows

cdef inline void ring_init(Ring* r, int64_t maxlen) noexcept nogil:
    r.buf = NULL
    r.maxlen = maxlen
    r.size = 0
    r.count = 0
    r.head = 0


cdef inline int ring_realloc(Ring* r, int64_t size, int64_t keep) except -1 nogil:
    """Re-home the newest ``keep`` timestamps, oldest first, in a buffer of ``size``."""
    cdef int64_t* buf = NULL
    cdef int64_t j, idx
    if size > 0:
        buf = <int64_t*>malloc(size * sizeof(int64_t))
        if buf == NULL:
            with gil:
                raise MemoryError()
    for j in range(keep):
        idx = (r.head + r.count - keep + j) % r.size
        buf[j] = r.buf[idx]
    free(r.buf)
    r.buf = buf
    r.size = size
    r.count = keep
    r.head = 0
    return 0


cdef inline int ring_append(Ring* r, int64_t t) except -1 nogil:
    """``deque.append`` on a deque with ``maxlen``: a full ring drops its oldest timestamp."""
    cdef int64_t idx, size
    if r.count < r.maxlen:
        if r.count == r.size:
            size = r.size * 2 if r.size else 8
            ring_realloc(r, size if size < r.maxlen else r.maxlen, r.count)
        idx = r.head + r.count
        if idx >= r.size:
            idx -= r.size
        r.buf[idx] = t
        r.count += 1
    else:  # full, and then size == maxlen
        r.buf[r.head] = t
        r.head += 1
        if r.head == r.size:
            r.head = 0
    return 0


cdef inline bint ring_recent(Ring* r, int64_t k, int64_t now, int64_t window) noexcept nogil:
    """``checks.state.recent``: at least ``k`` timestamps lie in ``(now - window, now]``."""
    cdef int64_t idx
    if k <= 0:
        return True
    if k > r.count:
        return False
    idx = r.head + r.count - k
    if idx >= r.size:
        idx -= r.size
    return r.buf[idx] > now - window


cdef inline void ring_clear(Ring* r) noexcept nogil:
    r.count = 0
    r.head = 0


cdef inline int ring_set_maxlen(Ring* r, int64_t maxlen) except -1 nogil:
    """``deque(ring, maxlen=maxlen)``: keep the newest ``maxlen`` timestamps."""
    cdef int64_t keep = r.count if r.count < maxlen else maxlen
    ring_realloc(r, keep, keep)
    r.maxlen = maxlen
    return 0


cdef inline tuple ring_tuple(Ring* r):
    cdef int64_t j
    cdef list out = []
    for j in range(r.count):
        out.append(r.buf[(r.head + j) % r.size])
    return tuple(out)


# ---------------------------------------------------------------- price levels

cdef inline int64_t* levels_pairs(Levels* lv) noexcept nogil:
    return lv.heap if lv.heap != NULL else lv.inline_


cdef inline int64_t levels_find(Levels* lv, int64_t t) noexcept nogil:
    """Index of the first level >= ``t`` (binary search)."""
    cdef int64_t* pairs = levels_pairs(lv)
    cdef int64_t lo = 0, hi = lv.n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if pairs[2 * mid] < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline int levels_add(Levels* lv, int64_t t) except -1 nogil:
    cdef int64_t j = levels_find(lv, t), k
    cdef int64_t* pairs = levels_pairs(lv)
    cdef int64_t* grown
    cdef int32_t cap
    if j < lv.n and pairs[2 * j] == t:
        pairs[2 * j + 1] += 1
        return 0
    if lv.n == (lv.cap if lv.heap != NULL else LEVELS_INLINE):
        cap = lv.cap * 2 if lv.heap != NULL else 8
        grown = <int64_t*>malloc(2 * cap * sizeof(int64_t))
        if grown == NULL:
            with gil:
                raise MemoryError()
        for k in range(2 * lv.n):
            grown[k] = pairs[k]
        free(lv.heap)
        lv.heap = grown
        lv.cap = cap
        pairs = grown
    k = lv.n
    while k > j:
        pairs[2 * k] = pairs[2 * k - 2]
        pairs[2 * k + 1] = pairs[2 * k - 1]
        k -= 1
    pairs[2 * j] = t
    pairs[2 * j + 1] = 1
    lv.n += 1
    return 0


cdef inline void levels_remove(Levels* lv, int64_t t) noexcept nogil:
    """One order fewer at ``t`` (which holds at least one); the level goes when it empties."""
    cdef int64_t j = levels_find(lv, t), k
    cdef int64_t* pairs = levels_pairs(lv)
    pairs[2 * j + 1] -= 1
    if pairs[2 * j + 1] == 0:
        for k in range(j, lv.n - 1):
            pairs[2 * k] = pairs[2 * k + 2]
            pairs[2 * k + 1] = pairs[2 * k + 3]
        lv.n -= 1


cdef inline int64_t levels_low(Levels* lv) noexcept nogil:
    return levels_pairs(lv)[0]


cdef inline int64_t levels_high(Levels* lv) noexcept nogil:
    return levels_pairs(lv)[2 * (lv.n - 1)]


cdef inline tuple levels_tuple(Levels* lv):
    cdef int64_t j
    cdef int64_t* pairs = levels_pairs(lv)
    return tuple([(pairs[2 * j], pairs[2 * j + 1]) for j in range(lv.n)])
