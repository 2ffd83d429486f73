# cython: language_level=3
"""The Cython risk engine: ``checks.engine.Engine``'s decisions over a C book, in about 0.4 µs.

``checks.engine`` is the specification; this module is the same engine written for speed, and
the differential property tests in ``tests/cext`` drive both through the same random histories
and demand identical answers (reason, reference, text, alerts, trigger) and an identical
``snapshot()`` after every step. Read the reference first: the methods here follow it line for
line, in the same order, so that a reader can hold the two side by side.

How it is fast
--------------
- The book is C structs indexed by interned ids (``cext/book.pxd``): the account and symbol of
  an order are the only dict lookups; every check after that is C arithmetic.
- Rolling windows are rings of int64 timestamps with the reference deques' capacities, so
  "at least k events in the window" is one array read.
- The accept path creates no Python object but the ``Decision`` (and its ``ref`` int); alerts
  and texts are built only when one fires or an order is refused, always by the functions of
  ``checks.decision``, so wording cannot drift between the engines.
- Floating-point expressions are written in the reference's order, with Python's int -> float
  conversions made explicit, and the extension is compiled with ``-ffp-contract=off``: every
  money amount (``fen``) is bit-identical to the reference's.
- A realistic book does not fit the caches, and one order touches a dozen scattered lines
  (account, position, counters, group book, rolling windows). ``decide`` asks for each line
  as soon as its address is known and overlaps the fetches with the field checks; the account
  and symbol tables are small and probed at once; each order leaves a hint of where its
  account's windows will be read next; the big tables sit in transparent huge pages (no TLB
  miss per order). ``bench/RESULTS-decide.md`` has the figures and the profile behind this.
- Order fields are read straight from a msgspec ``Struct``'s member slots, small ints from
  their digits, names from C hash tables keyed on the str's cached hash.

Start of day comes from the reference itself: the constructor builds a ``checks.engine.Engine``
from the same config and copies its freshly loaded book (resolved limits, derived instrument
rules, carried positions and their marks) into C, so that derivation has one home.

Domain: counts, money in fen and timestamps must fit int64, which any real book does by orders
of magnitude (prices above ``checks.engine.MAX_PRICE`` are refused by both engines, and a
config value beyond int64 is refused by this constructor with ``OverflowError``). Fill and
market-data prices are taken as floats, as the wire protocol delivers them.
"""

from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_Check
from cpython.object cimport PyObject, PyTypeObject, Py_TYPE
from libc.math cimport INFINITY, fabs, isfinite
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memset
from posix.mman cimport MADV_HUGEPAGE, madvise
from posix.stdlib cimport posix_memalign

from cext.book cimport (
    fk_name_fill, fk_name_lookup, fk_name_prefetch, fk_name_slot,
    ACCT_CLOSE_ONLY, ACCT_SUSPENDED, HEDGE_HEDGE, KILL_BLOCK, KILL_CLOSE_ONLY, NO_BUY,
    NS_PER_S, OFF_CLOSE_TODAY, OFF_OPEN, ORD_MARKET, PROG_CONFIRMED, PROG_NONE, SIDE_BUY,
    SIDE_SELL, ST_CANCELED, ST_FILLED, ST_NEW, ST_PARTIALLY_FILLED, ST_PENDING_NEW,
    ST_REJECTED, TIF_GFD, UNLIMITED, Account, GroupInstrument, Instrument, Order,
    Position, ProductCounters, REPEAT_KEYS, Ring, fen, ffloor, floordiv, floormod, levels_add, levels_high,
    levels_low, levels_remove, levels_tuple, muldiv, ring_append, ring_clear, ring_init, ring_recent, ring_set_maxlen,
    ring_tuple, warn_level,
)

import types

from checks import engine as _reference
from checks.calendar import CST_OFFSET_S as _CST_OFFSET_S
from checks.calendar import DAY_S as _DAY_S
from checks.calendar import trading_day_bounds, trading_day_number
from checks.decision import Decision, Outcome, alert, rejected, warn
from checks.enums import AccountStatus, AlertLevel, KillScope, ProgReg
from checks.model import UNLIMITED as _UNLIMITED
from checks.reasons import Reason as _Reason
from checks.state import AccountState
from checks.state import fen as _py_fen

# Python-level constants, bound once (texts and alerts carry the same enum members as the
# reference's, so even their types match).
cdef object _Decision = Decision  # (a C global: no module-dict lookup per order)
# The Reason members by name. Reading an attribute of the enum class goes through its
# metaclass (~90 ns); of this namespace, ~20 ns. The members are the same objects.
cdef object R = types.SimpleNamespace(**_Reason.__members__)
cdef object _CRITICAL = AlertLevel.CRITICAL
cdef object _WARNING = AlertLevel.WARNING
cdef object _FIRM = KillScope.FIRM
cdef object _ACCOUNT = KillScope.ACCOUNT
cdef object _GROUP = KillScope.GROUP
cdef object _SESSION = KillScope.SESSION
cdef object _INSTRUMENT = KillScope.INSTRUMENT
cdef object _PRODUCT = KillScope.PRODUCT
cdef int64_t CST_OFFSET_S = _CST_OFFSET_S
cdef int64_t DAY_S = _DAY_S
cdef double MAX_PRICE = _reference.MAX_PRICE
cdef int64_t SLOT_BITS = _reference.SLOT_BITS
cdef int64_t SLOT_MASK = (1 << _reference.SLOT_BITS) - 1
cdef int64_t NO_SELL = UNLIMITED
cdef double TWO_53 = 9007199254740992.0
cdef double TWO_61 = 2305843009213693952.0
cdef double TWO_62 = 4611686018427387904.0
cdef double TWO_63 = 9223372036854775808.0


cdef extern from *:
    """
    #include <structmember.h>
    /* Whether instances of t read attributes with the generic machinery (no __getattr__ or
       __getattribute__ of their own), so a member slot can be read directly. */
    static int fk_generic_getattr(PyTypeObject* t) {
        return t->tp_getattro == PyObject_GenericGetAttr;
    }
    /* The slot offset of a member descriptor holding an object (T_OBJECT_EX), else -1. */
    static Py_ssize_t fk_member_offset(PyObject* descr) {
        PyMemberDef* m;
        if (Py_TYPE(descr) != &PyMemberDescr_Type) return -1;
        m = ((PyMemberDescrObject*)descr)->d_member;
        return (m->type == T_OBJECT_EX && !(m->flags & READ_RESTRICTED)) ? m->offset : -1;
    }
    static inline __attribute__((always_inline)) PyObject* fk_slot(PyObject* obj, Py_ssize_t offset) {
        return *(PyObject**)((char*)obj + offset);
    }
    /* An exact int's value when it fits int64 (*ok = 1), read straight from its digits for the
       sizes orders carry (enums, lots, nanosecond timestamps); anything else: *ok = 0. */
    static inline __attribute__((always_inline)) long long fk_exact_int(PyObject* v, int* ok) {
        Py_ssize_t size;
        unsigned long long x;
        *ok = 0;
        if (!PyLong_CheckExact(v)) return 0;
    #if PY_VERSION_HEX < 0x030C0000 && PyLong_SHIFT == 30
        size = Py_SIZE(v);
        const digit* d = ((PyLongObject*)v)->ob_digit;
        switch (size) {
            case 0: *ok = 1; return 0;
            case 1: *ok = 1; return (long long)d[0];
            case -1: *ok = 1; return -(long long)d[0];
            case 2: *ok = 1; return (long long)d[0] | ((long long)d[1] << 30);
            case -2: *ok = 1; return -((long long)d[0] | ((long long)d[1] << 30));
            case 3: case -3:
                if (d[2] > 7) break;  /* beyond 2**63 - 1 */
                x = (unsigned long long)d[0] | ((unsigned long long)d[1] << 30)
                    | ((unsigned long long)d[2] << 60);
                *ok = 1;
                return size > 0 ? (long long)x : -(long long)x;
        }
    #endif
        {
            int overflow = 0;
            long long r = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (r == -1 && PyErr_Occurred()) { PyErr_Clear(); return 0; }
            *ok = !overflow;
            return r;
        }
    }
    /* The value of an enumerated order field: an int (an int subclass such as an IntEnum
       member too, a bool not) in 1..top, else 0. */
    static inline __attribute__((always_inline)) long long fk_enum(PyObject* v, long long top) {
        int ok;
        long long x = fk_exact_int(v, &ok);
        if (!ok) {
            int overflow = 0;
            if (PyLong_CheckExact(v) || !PyLong_Check(v) || PyBool_Check(v)) return 0;
            x = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (x == -1 && PyErr_Occurred()) { PyErr_Clear(); return 0; }
            if (overflow) return 0;
        }
        return (x >= 1 && x <= top) ? x : 0;
    }
    """
    long long fk_enum(PyObject* v, long long top) noexcept
    bint fk_generic_getattr(PyTypeObject* t)
    Py_ssize_t fk_member_offset(PyObject* descr)
    PyObject* fk_slot(PyObject* obj, Py_ssize_t offset) noexcept nogil
    long long fk_exact_int(PyObject* v, int* ok) noexcept
    void prefetch "__builtin_prefetch"(const void* addr) noexcept nogil


# ---------------------------------------------------------------- reading an order's fields
# decide() reads nine fields of a NewOrder. A msgspec Struct keeps them in member slots, so for
# such a type the slots are read directly (a few ns) instead of through getattr (~20 ns each).
# Any other object with the fields goes through getattr; a missing field raises as it does in
# the reference, at the same point.
cdef enum:
    F_ACCOUNT, F_SYMBOL, F_SIDE, F_OFFSET, F_HEDGE, F_ORD_TYPE, F_TIF, F_QTY, F_PRICE, N_FIELDS
FIELD_NAMES = ("account", "symbol", "side", "offset", "hedge", "ord_type", "tif", "qty", "price")
cdef PyTypeObject* _slot_type = NULL  # the type whose slot offsets are in _slot_offset
cdef object _slot_type_ref = None  # (keeps it alive)
cdef Py_ssize_t _slot_offset[N_FIELDS]
cdef dict _layouts = {}  # type -> offsets, or None when its fields are not plain slots


cdef object _layout(type t):
    """The member-slot offsets of ``t``'s order fields, or None (then getattr is used)."""
    cdef Py_ssize_t off
    if t in _layouts:
        return _layouts[t]
    offsets = None
    if fk_generic_getattr(<PyTypeObject*>t):
        offsets = []
        for name in FIELD_NAMES:
            descr = None
            for klass in t.__mro__:
                if name in klass.__dict__:
                    descr = klass.__dict__[name]
                    break
            off = fk_member_offset(<PyObject*>descr) if descr is not None else -1
            if off < 0:
                offsets = None
                break
            offsets.append(off)
    _layouts[t] = offsets = tuple(offsets) if offsets is not None else None
    return offsets


cdef inline bint _slots(object order):
    """Whether ``order``'s fields can be read from its slots (and set up the offsets)."""
    global _slot_type, _slot_type_ref
    cdef PyTypeObject* tp = Py_TYPE(order)
    cdef int j
    if tp == _slot_type:
        return True
    offsets = _layout(type(order))
    if offsets is None:
        return False
    for j in range(N_FIELDS):
        _slot_offset[j] = offsets[j]
    _slot_type_ref = type(order)
    _slot_type = tp
    return True


cdef object _getattr_field(object order, int field):
    return getattr(order, FIELD_NAMES[field])  # (an unset slot raises AttributeError here)


cdef inline object _field(object order, bint slots, int field):
    cdef PyObject* value = fk_slot(<PyObject*>order, _slot_offset[field]) if slots else NULL
    if value != NULL:
        return <object>value
    return _getattr_field(order, field)


cdef void* _grow(void* p, int64_t n, size_t item) except NULL:
    cdef void* q = realloc(p, n * item)
    if q == NULL:
        raise MemoryError()
    return q


cdef size_t HUGE_PAGE = 2 * 1024 * 1024
cdef enum:
    N_HINTS = 4  # window reads per account decide() prefetches from Engine.ring_hints


cdef void* _zeros(int64_t n, size_t item) except NULL:
    """Zeroed memory for ``n`` items. The big tables (positions, group books) are read at
    random, one order at a time: in 4 KB pages nearly every order would also miss the TLB, so
    they go in transparent huge pages where the kernel offers them, touched up front so the
    pages are there before the first order is."""
    cdef size_t size = (n if n > 0 else 1) * item
    cdef void* p = NULL
    if size < HUGE_PAGE:
        p = calloc(n if n > 0 else 1, item)
        if p == NULL:
            raise MemoryError()
        return p
    size = (size + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
    if posix_memalign(&p, HUGE_PAGE, size) != 0:
        raise MemoryError()
    madvise(p, size, MADV_HUGEPAGE)  # (a hint; without it, 4 KB pages)
    memset(p, 0, size)
    return p


cdef fk_name_slot* _name_table(dict names, size_t* mask, void*** keys) except NULL:
    """A ``fk_name_lookup`` table for a dict of str -> index 0..n-1, and its keys by index
    (borrowed: the dict must outlive the table)."""
    cdef size_t size = 8, j
    cdef fk_name_slot* table
    while 2 * size < <size_t>(3 * len(names)):  # load at most 2/3
        size *= 2
    table = <fk_name_slot*>_zeros(size, sizeof(fk_name_slot))
    keys[0] = <void**>_zeros(len(names), sizeof(void*))
    for key, idx in names.items():
        j = <size_t>hash(key) & (size - 1)
        while table[j].idx1 != 0:
            j = (j + 1) & (size - 1)
        fk_name_fill(&table[j], key, idx)
        keys[0][idx] = <void*>key
    mask[0] = size - 1
    return table


cdef inline int64_t* _ring_slot(Ring* r, int64_t k) noexcept nogil:
    """The timestamp ``ring_recent(r, k, ...)`` reads, or NULL when it reads none."""
    cdef int64_t idx
    if 0 < k <= r.count:
        idx = r.head + r.count - k
        if idx >= r.size:
            idx -= r.size
        return &r.buf[idx]
    return NULL


cdef inline void _prefetch_ring(Ring* r, int64_t k) noexcept nogil:
    """Ask for the cache line ``ring_recent(r, k, ...)`` will read."""
    cdef int64_t* slot = _ring_slot(r, k)
    if slot != NULL:
        prefetch(slot)


cdef inline void _prefetch_lines(const void* p, size_t size) noexcept nogil:
    cdef size_t off = 0
    while off < size:
        prefetch(<const char*>p + off)
        off += 64


cdef inline bint _open_at(int64_t tod, int64_t wday, int64_t* s, int64_t n) noexcept nogil:
    """``checks.calendar.open_at(tod, wday, sessions)``: time of day and weekday."""
    cdef int64_t j, start, end
    cdef bint weekday_ok = wday <= 4
    cdef bint small_hours_ok = 1 <= wday <= 5
    for j in range(n):
        start = s[2 * j]
        end = s[2 * j + 1]
        if start <= end:
            if start <= tod < end:
                if start == 0 and end >= DAY_S:
                    return True
                if (small_hours_ok if start == 0 else weekday_ok):
                    return True
        elif tod >= start:
            if weekday_ok:
                return True
        elif tod < end:
            if small_hours_ok:
                return True
    return False


cdef inline double _collar_width(Instrument* inst) noexcept nogil:
    """``checks.engine.collar_width``."""
    cdef double width = INFINITY
    cdef double by_ticks
    if inst.collar_pct > 0.0:
        width = inst.ref_price * inst.collar_pct
    if inst.collar_ticks > 0:
        by_ticks = <double>inst.collar_ticks * inst.tick
        if by_ticks < width:  # min(width, by_ticks)
            width = by_ticks
    return width


cdef inline int64_t _close_fee(Instrument* inst, double px, int64_t from_yd,
                               int64_t from_td) noexcept nogil:
    """``checks.engine.close_fee``."""
    cdef int64_t fee = 0
    cdef double yd = <double>from_yd, td = <double>from_td
    if from_yd:
        fee += fen(yd * inst.close_per_lot + px * yd * inst.multiplier * inst.close_ratio)
    if from_td:
        fee += fen(td * inst.close_today_per_lot
                   + px * td * inst.multiplier * inst.close_today_ratio)
    return fee


cdef inline int64_t _repeat_slot(Account* acct, int64_t i, int64_t side, int64_t offset,
                                 int64_t ticks, int64_t qty) noexcept nogil:
    """``checks.state.repeat_slot``: the slot holding the order key, or -1."""
    cdef int64_t k
    for k in range(REPEAT_KEYS):
        if (acct.rk_used[k] and acct.rk_ticks[k] == ticks and acct.rk_inst[k] == i
                and acct.rk_qty[k] == qty and acct.rk_side[k] == side
                and acct.rk_offset[k] == offset):
            return k
    return -1


cdef inline int64_t _repeat_victim(Account* acct, int64_t now) noexcept nogil:
    """``checks.state.repeat_victim``: a free slot, else one out of the window, else the least
    recently used (the first of equals)."""
    cdef int64_t k, best = 0, best_t = 0, t
    for k in range(REPEAT_KEYS):
        if not acct.rk_used[k] or acct.repeat_runs[k].count == 0:
            return k
        t = acct.rk_last[k]
        if t <= now - acct.repeat_window:
            return k
        if k == 0 or t < best_t:
            best = k
            best_t = t
    return best


cdef inline int64_t _available(Account* acct) noexcept nogil:
    """``AccountState.available``: the funds identity of docs/ARCHITECTURE.md §4, in fen."""
    return (acct.balance - acct.used_margin - acct.frozen_margin - acct.frozen_fee
            - acct.paid_fee + acct.realised)


cdef class Engine:
    """``checks.engine.Engine`` over a C book (see the module docstring)."""

    def __init__(self, cfg):
        cdef int64_t a, i, j, k, n_sess
        cdef Instrument* inst
        cdef Account* acct
        cdef Position* pos
        if self.accts != NULL:
            raise RuntimeError("Engine.__init__ called twice")
        ref = _reference.Engine(cfg)  # the start-of-day book, derived in one place
        self.cfg = cfg
        self.enforce_hours = ref.enforce_hours
        self.day_boundary = ref.day_boundary
        self.msg_ring = ref.msg_ring
        self.product_ids = dict(ref.product_ids)
        self.inst_ids = dict(ref.inst_ids)
        self.group_ids = dict(ref.group_ids)
        self.acct_ids = dict(ref.acct_ids)
        self.names = (dict(ref.acct_ids), dict(ref.inst_ids))  # (the tables' keys live here)
        self.acct_table = _name_table(self.names[0], &self.acct_mask, &self.acct_keys)
        self.inst_table = _name_table(self.names[1], &self.inst_mask, &self.inst_keys)
        self.n_acct = len(ref.accounts)
        self.n_inst = len(ref.instruments)
        self.n_prod = len(ref.product_ids)
        self.n_group = len(ref.group_ids)
        self.accts = <Account*>_zeros(self.n_acct, sizeof(Account))
        self.insts = <Instrument*>_zeros(self.n_inst, sizeof(Instrument))
        self.pos = <Position*>_zeros(self.n_acct * self.n_inst, sizeof(Position))
        self.prods = <ProductCounters*>_zeros(self.n_acct * self.n_prod, sizeof(ProductCounters))
        self.allowed = <unsigned char*>_zeros(self.n_acct * self.n_prod, 1)
        self.gis = <GroupInstrument*>_zeros(self.n_group * self.n_inst, sizeof(GroupInstrument))
        self.kill_acct = <unsigned char*>_zeros(self.n_acct, 1)
        self.kill_group = <unsigned char*>_zeros(self.n_group, 1)
        self.kill_inst = <unsigned char*>_zeros(self.n_inst, 1)
        self.kill_prod = <unsigned char*>_zeros(self.n_prod, 1)
        self.acct_group = <int64_t*>_zeros(self.n_acct, sizeof(int64_t))
        self.group_members = <int64_t*>_zeros(self.n_acct, sizeof(int64_t))
        self.group_start = <int64_t*>_zeros(self.n_group + 1, sizeof(int64_t))
        j = 0
        for g, members in enumerate(ref.group_members):
            self.group_start[g] = j
            for a in members:
                self.group_members[j] = a
                j += 1
        self.group_start[self.n_group] = j
        self.ring_hints = <void**>_zeros(N_HINTS * self.n_acct, sizeof(void*))
        for j in range(self.n_group * self.n_inst):
            self.gis[j].best_buy = NO_BUY
            self.gis[j].best_sell = NO_SELL

        self.inst_symbols = []
        self.inst_exchanges = []
        self.inst_products = []
        n_sess = sum(len(st.sessions) for st in ref.instruments)
        self.sessions = <int64_t*>_zeros(2 * n_sess, sizeof(int64_t))
        n_sess = 0
        for st in ref.instruments:
            i = st.idx
            inst = &self.insts[i]
            self.inst_symbols.append(st.symbol)
            self.inst_exchanges.append(st.exchange)
            self.inst_products.append(st.product)
            inst.product = st.product_idx
            inst.multiplier = st.multiplier
            inst.tick = st.tick
            inst.upper = st.upper
            inst.lower = st.lower
            inst.ref_price = st.ref_price
            inst.mark = st.mark
            inst.margin_long = st.margin_long
            inst.margin_short = st.margin_short
            inst.margin_per_lot = st.margin_per_lot
            inst.open_per_lot = st.open_per_lot
            inst.open_ratio = st.open_ratio
            inst.close_per_lot = st.close_per_lot
            inst.close_ratio = st.close_ratio
            inst.close_today_per_lot = st.close_today_per_lot
            inst.close_today_ratio = st.close_today_ratio
            inst.per_order_fee = st.per_order_fee
            inst.per_cancel_fee = st.per_cancel_fee
            inst.min_limit_qty = st.min_limit_qty
            inst.max_limit_qty = st.max_limit_qty
            inst.min_market_qty = st.min_market_qty
            inst.max_market_qty = st.max_market_qty
            inst.position_limit = st.position_limit
            inst.collar_pct = st.collar_pct
            inst.collar_ticks = st.collar_ticks
            inst.cancel_limit = st.cancel_limit
            inst.large_qty = st.large_qty
            inst.large_cancel_limit = st.large_cancel_limit
            inst.self_trade_limit = st.self_trade_limit
            inst.fak_counts_as_cancel = st.fak_counts_as_cancel
            inst.market_ok = st.market_ok
            inst.close_today_distinct = st.close_today_distinct
            inst.hft_per_sec = st.hft_per_sec
            inst.hft_per_day = st.hft_per_day
            inst.sess_first = n_sess
            inst.sess_count = len(st.sessions)
            for start, end in st.sessions:
                self.sessions[2 * n_sess] = start
                self.sessions[2 * n_sess + 1] = end
                n_sess += 1

        self.acct_names = []
        self.acct_scopes = []
        for st in ref.accounts:
            a = st.idx
            acct = &self.accts[a]
            self.acct_names.append(st.id)
            self.acct_scopes.append(f"account:{st.id}")
            acct.group = st.group
            self.acct_group[a] = st.group
            acct.status = st.status
            acct.programmatic = st.programmatic
            acct.hft_registered = st.hft_registered
            acct.hft_max_per_sec = st.hft_max_per_sec
            acct.hft_max_per_day = st.hft_max_per_day
            acct.direct_access = st.direct_access
            acct.restricted = len(st.products) > 0
            for p in st.products:
                self.allowed[a * self.n_prod + p] = 1
            acct.market_ok = st.market_ok
            acct.limit_ok = st.limit_ok
            acct.balance = st.balance
            self._load_limits(a, st)
            acct.frozen_margin = st.frozen_margin
            acct.frozen_fee = st.frozen_fee
            acct.used_margin = st.used_margin
            acct.paid_fee = st.paid_fee
            acct.realised = st.realised
            acct.unrealised = st.unrealised
            acct.pnl_base = st.pnl_base
            acct.loss_warned = st.loss_warned
            acct.loss_stopped = st.loss_stopped
            acct.day_msgs = st.day_msgs
            acct.occasions = st.occasions
            acct.programmatic_flagged = st.programmatic_flagged
            acct.hft_flagged = st.hft_flagged
            acct.open_orders = st.open_orders
            ring_init(&acct.orders, st.orders.maxlen)
            ring_init(&acct.cancels, st.cancels.maxlen)
            ring_init(&acct.msgs, st.msgs.maxlen)
            ring_init(&acct.execs, st.execs.maxlen)
            if REPEAT_KEYS != _reference.REPEAT_KEYS:
                raise RuntimeError("cext/book.pxd REPEAT_KEYS differs from checks.state's")
            for k in range(REPEAT_KEYS):
                ring_init(&acct.repeat_runs[k], st.repeat_runs[k].maxlen)
                acct.rk_used[k] = False

        for (a, i), ps in ref.positions.items():
            pos = &self.pos[a * self.n_inst + i]
            (pos.long_td, pos.long_yd, pos.short_td, pos.short_yd,
             pos.long_td_frozen, pos.long_yd_frozen, pos.short_td_frozen, pos.short_yd_frozen,
             pos.long_pending, pos.short_pending, pos.long_cost, pos.short_cost,
             pos.long_margin, pos.short_margin, pos.unrealised,
             pos.cancels, pos.large_cancels, pos.self_trades) = ps.as_tuple()
        for i, holders in ref.holders.items():
            for a in holders:
                self.pos[a * self.n_inst + i].holder = True
                self.insts[i].n_holders += 1

        self.kills = {int(s): {} for s in KillScope}
        self.session_kills = self.kills[int(KillScope.SESSION)]
        self.automated_sessions = set()
        self.account_state_cls = AccountState
        self.day = ref.day
        self.day_end = ref.day_end
        self.tod_start = -(1 << 62)  # no second cached yet
        self.alerts = None

    def __dealloc__(self):
        cdef int64_t j, k
        if self.accts != NULL:
            for j in range(self.n_acct):
                free(self.accts[j].orders.buf)
                free(self.accts[j].cancels.buf)
                free(self.accts[j].msgs.buf)
                free(self.accts[j].execs.buf)
                for k in range(REPEAT_KEYS):
                    free(self.accts[j].repeat_runs[k].buf)
        if self.gis != NULL:
            for j in range(self.n_group * self.n_inst):
                free(self.gis[j].buys.heap)
                free(self.gis[j].sells.heap)
        free(self.acct_table)
        free(self.inst_table)
        free(self.acct_keys)
        free(self.inst_keys)
        free(self.accts)
        free(self.insts)
        free(self.pos)
        free(self.prods)
        free(self.allowed)
        free(self.gis)
        free(self.sessions)
        free(self.orders)
        free(self.free_slots)
        free(self.kill_acct)
        free(self.kill_group)
        free(self.kill_inst)
        free(self.kill_prod)
        free(self.acct_group)
        free(self.group_members)
        free(self.group_start)
        free(self.ring_hints)

    cdef int _load_limits(self, int64_t a, object st) except -1:
        """Copy ``AccountState.set_limits``'s derived limits (``st``) into the C account."""
        cdef Account* acct = &self.accts[a]
        acct.max_order_qty = st.max_order_qty
        acct.max_notional = st.max_notional
        acct.max_orders_per_sec = st.max_orders_per_sec
        acct.max_cancels_per_sec = st.max_cancels_per_sec
        acct.max_open_orders = st.max_open_orders
        acct.max_open_volume = st.max_open_volume
        acct.max_messages = st.max_messages
        acct.max_otr = st.max_otr
        acct.otr_min_messages = st.otr_min_messages
        acct.message_fee = st.message_fee
        acct.message_fee_free = st.message_fee_free
        acct.max_repeats = st.max_repeats
        acct.repeat_window = st.repeat_window
        acct.max_executions = st.max_executions
        acct.execution_window = st.execution_window
        # Every use of the loss limit is guarded by "< UNLIMITED", so clamping is exact.
        loss_limit = st.loss_limit
        acct.loss_limit = UNLIMITED if loss_limit >= _UNLIMITED else loss_limit
        acct.programmatic_per_sec = st.programmatic_per_sec
        acct.programmatic_occasions = st.programmatic_occasions
        acct.stop_programmatic = st.stop_programmatic
        acct.warn_fraction = st.warn_fraction
        acct.lvl_orders = warn_level(acct.max_orders_per_sec, acct.warn_fraction)
        acct.lvl_cancels = warn_level(acct.max_cancels_per_sec, acct.warn_fraction)
        acct.lvl_open_volume = warn_level(acct.max_open_volume, acct.warn_fraction)
        acct.lvl_open_orders = warn_level(acct.max_open_orders, acct.warn_fraction)
        acct.lvl_messages = warn_level(acct.max_messages, acct.warn_fraction)
        acct.lvl_hft_day = warn_level(acct.hft_max_per_day, acct.warn_fraction)
        acct.lvl_repeats = warn_level(acct.max_repeats, acct.warn_fraction)
        acct.lvl_executions = warn_level(acct.max_executions, acct.warn_fraction)
        acct.lvl_otr = acct.max_otr * acct.warn_fraction
        return 0

    # ---------------------------------------------------------------- sessions and the day
    def register_session(self, session, automated):
        """Declare whether a session is automated (needs a confirmed registration to trade)."""
        if automated:
            self.automated_sessions.add(session)
        else:
            self.automated_sessions.discard(session)

    cdef int _roll_day(self, int64_t now) except -1:
        cdef int64_t j, n = self.n_acct * self.n_inst
        cdef Account* acct
        cdef Position* pos
        cdef Order* o
        day = trading_day_number(now, self.day_boundary)
        self.day_end = trading_day_bounds(day, self.day_boundary)[1]
        if self.day == -1:
            self.day = day
            return 0
        self.day = day
        for j in range(self.n_acct):
            acct = &self.accts[j]
            acct.day_msgs = 0
            acct.occasions = 0
            acct.programmatic_flagged = False
            acct.hft_flagged = False
            acct.pnl_base = acct.realised + acct.unrealised - acct.paid_fee  # the loss is intraday
            acct.loss_warned = False
            acct.loss_stopped = False
        for j in range(n):
            pos = &self.pos[j]
            pos.long_yd += pos.long_td
            pos.short_yd += pos.short_td
            pos.long_yd_frozen += pos.long_td_frozen
            pos.short_yd_frozen += pos.short_td_frozen
            pos.long_td = pos.short_td = pos.long_td_frozen = pos.short_td_frozen = 0
            pos.cancels = pos.large_cancels = pos.self_trades = 0
        for j in range(self.n_slots):
            o = &self.orders[j]
            if o.live:  # pending closes now draw on yesterday's position
                o.close_yd += o.close_td
                o.close_td = 0
        for j in range(self.n_acct * self.n_prod):
            self.prods[j].messages = 0
            self.prods[j].filled_orders = 0
        for j in range(self.n_group * self.n_inst):
            self.gis[j].open_volume = 0
        for j in range(self.n_slots):  # working openings carry into the new day's volume
            o = &self.orders[j]
            if o.live and o.opening and o.hedge != HEDGE_HEDGE:
                self.gis[self.accts[o.acct].group * self.n_inst + o.inst].open_volume += o.leaves
        return 0

    # ---------------------------------------------------------------- decide
    def decide(self, order, now_ns, session=0):
        """Check a ``NewOrder`` (or anything with its fields); reserve it when it passes."""
        cdef int64_t a, i, side, offset, hedge, ord_type, tif
        cdef bint slots
        cdef int ok_int
        cdef int64_t now = fk_exact_int(<PyObject*>now_ns, &ok_int)
        cdef PyObject* early

        if not ok_int:
            now = now_ns  # (not an int64: raises as the reference's arithmetic would)
        if now >= self.day_end:
            self._roll_day(now)
        slots = _slots(order)
        account = _field(order, slots, F_ACCOUNT)
        if slots:  # both table probes at once (reading a set slot has no effect to keep in order)
            early = fk_slot(<PyObject*>order, _slot_offset[F_SYMBOL])
            if early != NULL and type(<object>early) is str:
                fk_name_prefetch(self.inst_table, self.inst_mask, early)
        a = fk_name_lookup(self.acct_table, self.acct_mask, self.acct_keys, <void*>account) \
            if type(account) is str else -1
        if a < 0:
            return rejected(R.UNKNOWN_ACCOUNT, f"account {order.account!r}")
        # A realistic book does not fit in the caches: ask for the account's lines now, and
        # its position, counters and group lines as soon as the instrument is known, so the
        # memory fetches overlap with the Python-level field checks below. Where in its
        # rolling windows the account's checks will read is only known from its own lines,
        # so the last order left a hint (a compact array) to fetch those in parallel, too.
        self._prefetch_account(a)
        symbol = _field(order, slots, F_SYMBOL)
        i = fk_name_lookup(self.inst_table, self.inst_mask, self.inst_keys, <void*>symbol) \
            if type(symbol) is str else -1
        if i < 0:
            return rejected(R.UNKNOWN_INSTRUMENT, f"symbol {order.symbol!r}")
        self._prefetch(a, i)
        v_side = _field(order, slots, F_SIDE)
        v_offset = _field(order, slots, F_OFFSET)
        v_hedge = _field(order, slots, F_HEDGE)
        v_ord_type = _field(order, slots, F_ORD_TYPE)
        v_tif = _field(order, slots, F_TIF)
        side = fk_enum(<PyObject*>v_side, 2)
        if side == 0:
            return rejected(R.INVALID_FIELD, f"side={v_side!r}")
        offset = fk_enum(<PyObject*>v_offset, 4)
        if offset == 0:
            return rejected(R.INVALID_FIELD, f"offset={v_offset!r}")
        hedge = fk_enum(<PyObject*>v_hedge, 3)
        if hedge == 0:
            return rejected(R.INVALID_FIELD, f"hedge={v_hedge!r}")
        ord_type = fk_enum(<PyObject*>v_ord_type, 2)
        if ord_type == 0:
            return rejected(R.INVALID_FIELD, f"ord_type={v_ord_type!r}")
        tif = fk_enum(<PyObject*>v_tif, 3)
        if tif == 0:
            return rejected(R.INVALID_FIELD, f"tif={v_tif!r}")
        decision = self._check(order, slots, a, i, side, offset, hedge, ord_type, tif, 0, 0.0, now,
                               session)
        return self._accepted_decision() if decision is None else decision

    cdef object _accepted_decision(self):
        """The ``Decision`` of the order the last ``_check`` accepted (``last_slot``), taking
        its alerts."""
        decision = _Decision(0, self._ref_of(self.last_slot), "", self.last_alerts,
                             self.last_trigger)
        self.last_alerts = None
        return decision

    cdef int64_t account_index(self, object account) noexcept:
        """The book's index of an account id (a str), or -1: ``decide``'s first lookup."""
        if type(account) is not str:
            return -1
        return fk_name_lookup(self.acct_table, self.acct_mask, self.acct_keys, <void*>account)

    cdef int64_t instrument_index(self, object symbol) noexcept:
        """The book's index of a symbol (a str), or -1: ``decide``'s second lookup."""
        if type(symbol) is not str:
            return -1
        return fk_name_lookup(self.inst_table, self.inst_mask, self.inst_keys, <void*>symbol)

    cdef object decide_c(self, int64_t a, int64_t i, int64_t side, int64_t offset, int64_t hedge,
                         int64_t ord_type, int64_t tif, double price, int64_t qty, int64_t now,
                         object session):
        """``decide`` for an order as the wire carries it — the account and symbol already
        found (``account_index`` / ``instrument_index``, both >= 0), the enums and lots as
        integers, the price a float — with no order object: the compiled order path's call.
        Returns None when the order is accepted (its slot in ``last_slot``, what it set off in
        ``last_alerts`` and ``last_trigger``; ``_ref_of`` gives its reference), else the
        refusal's ``Decision``, exactly as ``decide`` of the same order would."""
        if now >= self.day_end:
            self._roll_day(now)
        self._prefetch_account(a)
        self._prefetch(a, i)
        if not 1 <= side <= 2:
            return rejected(R.INVALID_FIELD, f"side={side}")
        if not 1 <= offset <= 4:
            return rejected(R.INVALID_FIELD, f"offset={offset}")
        if not 1 <= hedge <= 3:
            return rejected(R.INVALID_FIELD, f"hedge={hedge}")
        if not 1 <= ord_type <= 2:
            return rejected(R.INVALID_FIELD, f"ord_type={ord_type}")
        if not 1 <= tif <= 3:
            return rejected(R.INVALID_FIELD, f"tif={tif}")
        return self._check(None, False, a, i, side, offset, hedge, ord_type, tif, qty, price, now,
                           session)

    def decide_wire(self, str account, str symbol, int64_t side, int64_t offset, int64_t hedge,
                    int64_t ord_type, int64_t tif, double price, int64_t qty, int64_t now,
                    int64_t session):
        """``decide_c`` from Python, answering as ``decide`` does (an unknown account or
        symbol refused as there): how tests/cext holds the compiled path's entry to the
        reference."""
        cdef int64_t a = self.account_index(account)
        cdef int64_t i = self.instrument_index(symbol)
        if a < 0 or i < 0:
            return self.decide(types.SimpleNamespace(
                account=account, symbol=symbol, side=side, offset=offset, hedge=hedge,
                ord_type=ord_type, tif=tif, price=price, qty=qty), now, session)
        decision = self.decide_c(a, i, side, offset, hedge, ord_type, tif, price, qty, now,
                                 session)
        return self._accepted_decision() if decision is None else decision

    def ack_wire(self, int64_t ref):
        """``ack_c`` from Python, answering as ``apply_ack``."""
        return Outcome() if self.ack_c(ref) else Outcome(known=False)

    def fill_wire(self, int64_t ref, int64_t qty, double px, int64_t now, bint self_trade):
        """``fill_c`` from Python, answering as ``apply_fill``."""
        cdef int done = self.fill_c(ref, qty, px, now, self_trade)
        if not done:
            return Outcome(known=False)
        alerts = self.last_alerts
        self.last_alerts = None
        return Outcome(finished=done == 2, alerts=alerts, trigger=self.last_trigger)

    cdef void _prefetch_account(self, int64_t a) noexcept:
        """Ask for account ``a``'s lines, and for where its windows were last read."""
        cdef int k
        _prefetch_lines(&self.accts[a], sizeof(Account))
        for k in range(N_HINTS):
            prefetch(self.ring_hints[N_HINTS * a + k])

    cdef void _prefetch(self, int64_t a, int64_t i) noexcept:
        """Ask for the lines an order of account ``a`` in instrument ``i`` will be checked
        against, so the fetches overlap with the field checks before them."""
        cdef Account* acct = &self.accts[a]
        cdef Instrument* inst
        cdef Position* pos
        cdef ProductCounters* pc
        cdef GroupInstrument* gi
        cdef int64_t g, k
        inst = &self.insts[i]
        pos = &self.pos[a * self.n_inst + i]
        _prefetch_lines(pos, sizeof(Position))
        pc = &self.prods[a * self.n_prod + inst.product]
        prefetch(pc)
        gi = &self.gis[self.acct_group[a] * self.n_inst + i]  # (not waiting for acct's line)
        _prefetch_lines(gi, sizeof(GroupInstrument))
        g = self.acct_group[a]  # the group's other positions, for an opening's position limit
        for k in range(self.group_start[g], min(self.group_start[g + 1], self.group_start[g] + 4)):
            if self.group_members[k] != a:
                _prefetch_lines(&self.pos[self.group_members[k] * self.n_inst + i], sizeof(Position))
        # The windows' lines depend on the account's (head, count): the first wait for memory.
        _prefetch_ring(&acct.orders, acct.max_orders_per_sec)
        _prefetch_ring(&acct.cancels, acct.max_cancels_per_sec)
        _prefetch_ring(&acct.msgs, acct.programmatic_per_sec)
        _prefetch_ring(&acct.msgs, acct.hft_max_per_sec if acct.hft_registered
                       and not acct.direct_access else inst.hft_per_sec)

    cdef object _check(self, object order, bint slots, int64_t a, int64_t i, int64_t side,
                       int64_t offset, int64_t hedge, int64_t ord_type, int64_t tif,
                       int64_t qty_c, double price_c, int64_t now, object session):
        """Checks 2-11 of an order whose account, instrument and enums are known: None when it
        passes (reserved: see ``decide_c``), else the refusal. The lots and price are read
        from ``order`` at their check, or, when ``order`` is None, are ``qty_c`` and
        ``price_c`` as the wire carries them."""
        cdef int64_t qty, lo, hi, ticks
        cdef int64_t held, yd_free, td_free, close_yd = 0, close_td = 0, margin = 0, fee = 0
        cdef int64_t need, available, messages, mode, local
        cdef double price = 0.0, px, q, steps, width, notional, otr, rate, mf, ff
        cdef bint opening, market, large, counts_open, ok
        cdef int overflow = 0, ok_int
        cdef int64_t rk
        cdef long long x
        cdef Account* acct = &self.accts[a]
        cdef Instrument* inst = &self.insts[i]
        cdef Position* pos = &self.pos[a * self.n_inst + i]
        cdef ProductCounters* pc = &self.prods[a * self.n_prod + inst.product]
        cdef GroupInstrument* gi = &self.gis[self.acct_group[a] * self.n_inst + i]
        opening = offset == OFF_OPEN

        # 2. kill switch
        mode = self.kill_firm
        if mode == KILL_BLOCK or (mode == KILL_CLOSE_ONLY and opening):
            return rejected(R.KILLED_FIRM)
        mode = self.kill_acct[a]
        if mode == KILL_BLOCK or (mode == KILL_CLOSE_ONLY and opening):
            return rejected(R.KILLED_ACCOUNT)
        mode = self.kill_group[acct.group]
        if mode == KILL_BLOCK or (mode == KILL_CLOSE_ONLY and opening):
            return rejected(R.KILLED_GROUP)
        if self.session_kills or type(session) is not int:  # (an unhashable session raises)
            mode = self.session_kills.get(session, 0)
            if mode == KILL_BLOCK or (mode == KILL_CLOSE_ONLY and opening):
                return rejected(R.KILLED_SESSION)
        mode = self.kill_inst[i]
        if mode == KILL_BLOCK or (mode == KILL_CLOSE_ONLY and opening):
            return rejected(R.KILLED_INSTRUMENT)
        mode = self.kill_prod[inst.product]
        if mode == KILL_BLOCK or (mode == KILL_CLOSE_ONLY and opening):
            return rejected(R.KILLED_PRODUCT)

        # 3. permissions
        if acct.status == ACCT_SUSPENDED:
            return rejected(R.ACCOUNT_SUSPENDED)
        if acct.status == ACCT_CLOSE_ONLY and opening:
            return rejected(R.ACCOUNT_CLOSE_ONLY)
        # (the reference asks "session in automated and not confirmed"; for an int session the
        # membership test cannot raise, so the cheap C test may go first)
        if (acct.programmatic != PROG_CONFIRMED or type(session) is not int) \
                and session in self.automated_sessions and acct.programmatic != PROG_CONFIRMED:
            return rejected(R.PROGRAMMATIC_NOT_CONFIRMED)
        if acct.restricted and not self.allowed[a * self.n_prod + inst.product]:
            return rejected(R.INSTRUMENT_NOT_PERMITTED, f"product {self.inst_products[i]}")
        market = ord_type == ORD_MARKET
        if (market and not acct.market_ok) or (not market and not acct.limit_ok):
            return rejected(R.ORD_TYPE_NOT_ALLOWED_ACCOUNT)
        if market and (not inst.market_ok or tif == TIF_GFD):
            return rejected(R.ORD_TYPE_NOT_ALLOWED_EXCHANGE,
                            f"{self.inst_exchanges[i]} market orders" if not inst.market_ok
                            else "market orders must be IOC or FOK")

        # 4. static validation
        if self.enforce_hours:
            if not self.tod_start <= now < self.tod_start + NS_PER_S:  # (three divisions saved)
                self.tod_start = floordiv(now, NS_PER_S) * NS_PER_S
                local = floordiv(now, NS_PER_S) + CST_OFFSET_S
                self.tod = floormod(local, DAY_S)
                self.wday = floormod(floordiv(local, DAY_S) + 3, 7)
            if not _open_at(self.tod, self.wday, &self.sessions[2 * inst.sess_first],
                            inst.sess_count):
                return rejected(R.MARKET_CLOSED)
        lo = inst.min_market_qty if market else inst.min_limit_qty
        hi = inst.max_market_qty if market else inst.max_limit_qty
        if order is None:  # lots as the wire carries them: an int64
            qty = qty_c
            if qty <= 0:
                return rejected(R.INVALID_QTY, f"qty={qty}")
        else:
            oq = _field(order, slots, F_QTY)
            if type(oq) is int:
                x = fk_exact_int(<PyObject*>oq, &ok_int)
                if not ok_int:
                    x = PyLong_AsLongLongAndOverflow(oq, &overflow)
                if overflow < 0:
                    return rejected(R.INVALID_QTY, f"qty={oq!r}")
                if overflow > 0:  # beyond int64: positive, and above any instrument's maximum
                    return rejected(R.QTY_ABOVE_MAX, f"{oq} > {hi}")
                qty = x
            elif type(oq) is float:
                q = PyFloat_AS_DOUBLE(oq)
                if not (isfinite(q) and q == ffloor(q) and fabs(q) < TWO_62):
                    return rejected(R.INVALID_QTY, f"qty={oq!r}")
                qty = <int64_t>q
            else:
                return rejected(R.INVALID_QTY, f"qty={oq!r}")
            if qty <= 0:
                return rejected(R.INVALID_QTY, f"qty={oq!r}")
        if qty < lo:
            return rejected(R.QTY_BELOW_MIN, f"{qty} < {lo}")
        if qty > hi:
            return rejected(R.QTY_ABOVE_MAX, f"{qty} > {hi}")
        ok = True
        if order is None:  # a float, as the wire carries it
            price = price_c
            op = None
        else:
            op = _field(order, slots, F_PRICE)
            if type(op) is float:
                price = PyFloat_AS_DOUBLE(op)
            elif type(op) is int:
                x = PyLong_AsLongLongAndOverflow(op, &overflow)
                if overflow or not (-TWO_53 < <double>x < TWO_53):
                    ok = False
                else:
                    price = <double>x
            else:
                ok = False
        if not ok or not isfinite(price) or price < 0.0 or (price == 0.0 and not market):
            if order is None:
                op = price
            return rejected(R.INVALID_PRICE, f"price={op!r}")
        if not market:
            steps = price / inst.tick + 0.5  # inf for an absurd price: not on tick
            if isfinite(steps):
                steps = ffloor(steps)
            if not isfinite(steps) or fabs(steps * inst.tick - price) > inst.tick * 1e-6:
                return rejected(R.PRICE_NOT_ON_TICK, f"{price} with tick {inst.tick}")

            # 5. price: on whole ticks (checks.engine.band_upper_ticks / band_lower_ticks)
            if steps > ffloor(inst.upper / inst.tick + 1e-6):
                return rejected(R.PRICE_ABOVE_UPPER_LIMIT, f"{price} > {inst.upper}")
            if steps < -ffloor(1e-6 - inst.lower / inst.tick):  # (the ceiling)
                return rejected(R.PRICE_BELOW_LOWER_LIMIT, f"{price} < {inst.lower}")
            width = _collar_width(inst)
            if fabs(price - inst.ref_price) > width + inst.tick * 1e-6:  # (the edge is inside)
                return rejected(R.PRICE_OUTSIDE_COLLAR,
                                f"{price} vs reference {inst.ref_price} +/- {width:.6g}")
            ticks = <int64_t>steps
            px = price
        else:
            ticks = -1
            px = inst.upper if side == SIDE_BUY else inst.lower  # market orders freeze at the band
        rk = _repeat_slot(acct, i, side, offset, ticks, qty)  # (its times' line: fetch it now)
        if rk >= 0:
            _prefetch_ring(&acct.repeat_runs[rk], acct.max_repeats)

        # 6. size
        if qty > acct.max_order_qty:
            return rejected(R.QTY_ABOVE_ACCOUNT_MAX, f"{qty} > {acct.max_order_qty}")
        q = <double>qty
        notional = px * q * inst.multiplier
        # checks.state.fen_float of both: compared in whole fen
        if ffloor(notional * 100.0 + 0.5) > ffloor(acct.max_notional * 100.0 + 0.5):
            return rejected(R.NOTIONAL_ABOVE_MAX, f"{notional:.2f} > {acct.max_notional:.2f}")

        # 7. rates and counts
        if ring_recent(&acct.orders, acct.max_orders_per_sec, now, NS_PER_S):
            return rejected(R.ORDER_RATE, f"limit {acct.max_orders_per_sec}/s")
        if ring_recent(&acct.cancels, acct.max_cancels_per_sec, now, NS_PER_S):
            return rejected(R.CANCEL_RATE, f"limit {acct.max_cancels_per_sec}/s")
        # 703-705, 707, 708 restrict opening only (限制开仓): closes always pass
        if opening and pos.cancels >= inst.cancel_limit:
            return rejected(R.CONTRACT_CANCEL_LIMIT,
                            f"{pos.cancels} cancels on {self.inst_symbols[i]}")
        large = qty >= inst.large_qty
        if opening and large and pos.large_cancels >= inst.large_cancel_limit:
            return rejected(R.LARGE_CANCEL_LIMIT,
                            f"{pos.large_cancels} large cancels on {self.inst_symbols[i]}")
        if opening and pos.self_trades >= inst.self_trade_limit:
            return rejected(R.SELF_TRADE_LIMIT,
                            f"{pos.self_trades} self-trades on {self.inst_symbols[i]}")
        counts_open = opening and hedge != HEDGE_HEDGE  # hedging is exempt from 交易限额
        if counts_open and gi.open_volume + qty > acct.max_open_volume:
            return rejected(R.OPEN_VOLUME_LIMIT,
                            f"{gi.open_volume} + {qty} > {acct.max_open_volume}")
        messages = pc.messages + 1
        if opening and messages > acct.max_messages:
            return rejected(R.MESSAGE_LIMIT,
                            f"{messages} > {acct.max_messages} on {self.inst_products[i]}")
        if opening and messages >= acct.otr_min_messages:
            otr = <double>messages / <double>(pc.filled_orders if pc.filled_orders > 1 else 1) - 1.0
            if otr > acct.max_otr:
                return rejected(R.OTR_LIMIT,
                                f"{otr:.2f} > {acct.max_otr:.2f} on {self.inst_products[i]}")
        if acct.open_orders >= acct.max_open_orders:
            return rejected(R.OPEN_ORDERS_LIMIT, f"{acct.open_orders} working")
        if rk >= 0 and ring_recent(&acct.repeat_runs[rk], acct.max_repeats, now,
                                   acct.repeat_window):  # N identical within the window
            return rejected(R.REPEATED_ORDERS, f"{acct.max_repeats} identical orders",
                            trigger=R.REPEATED_ORDERS)

        # 8. programmatic and high-frequency trading
        if acct.programmatic == PROG_NONE and acct.programmatic_flagged and acct.stop_programmatic:
            return rejected(R.PROGRAMMATIC_UNREGISTERED, trigger=R.PROGRAMMATIC_UNREGISTERED)
        if acct.hft_registered and not acct.direct_access:
            if (ring_recent(&acct.msgs, acct.hft_max_per_sec, now, NS_PER_S)
                    or acct.day_msgs >= acct.hft_max_per_day):
                return rejected(R.HFT_LIMIT, f"reported {acct.hft_max_per_sec}/s, "
                                             f"{acct.hft_max_per_day}/day")
        elif (ring_recent(&acct.msgs, inst.hft_per_sec, now, NS_PER_S)
                or acct.day_msgs >= inst.hft_per_day):
            return rejected(R.HFT_DIRECT_ACCESS if acct.direct_access else R.HFT_UNREGISTERED,
                            f"standard {inst.hft_per_sec}/s, {inst.hft_per_day}/day")

        # 9. positions
        if opening:
            held = self._group_held(acct.group, i, side)  # the group's, pending opens included
            if held + qty > inst.position_limit:
                return rejected(R.POSITION_LIMIT, f"{held} + {qty} > {inst.position_limit}")
        else:
            if side == SIDE_SELL:  # selling closes a long position
                yd_free = pos.long_yd - pos.long_yd_frozen
                td_free = pos.long_td - pos.long_td_frozen
            else:
                yd_free = pos.short_yd - pos.short_yd_frozen
                td_free = pos.short_td - pos.short_td_frozen
            ok = True  # checks.engine.close_split
            if inst.close_today_distinct:
                if offset == OFF_CLOSE_TODAY:
                    ok = td_free >= qty
                    close_td = qty
                else:
                    ok = yd_free >= qty
                    close_yd = qty
            elif yd_free + td_free < qty:
                ok = False
            else:
                close_yd = qty if qty < yd_free else yd_free
                close_td = qty - close_yd
            if not ok:
                return rejected(R.INSUFFICIENT_POSITION,
                                f"closable today {td_free}, yesterday {yd_free}, asked {qty}")

        # 10. funds
        if opening:
            rate = inst.margin_long if side == SIDE_BUY else inst.margin_short
            mf = ffloor((px * q * inst.multiplier * rate + q * inst.margin_per_lot) * 100.0 + 0.5)
            ff = ffloor((q * inst.open_per_lot + px * q * inst.multiplier * inst.open_ratio)
                       * 100.0 + 0.5)
            if acct.loss_limit < UNLIMITED and (acct.realised + acct.unrealised - acct.paid_fee
                                                - acct.pnl_base <= -acct.loss_limit):
                return rejected(R.LOSS_LIMIT, trigger=R.LOSS_LIMIT)
            available = _available(acct)
            if fabs(mf) < TWO_61 and fabs(ff) < TWO_61:
                margin = <int64_t>mf
                fee = <int64_t>ff
                need = margin + fee + inst.per_order_fee
                if need > available:
                    return rejected(R.INSUFFICIENT_FUNDS,
                                    f"need {<object>need / 100:.2f}, "
                                    f"available {<object>available / 100:.2f}")
            else:  # beyond int64 money: the reference's exact Python arithmetic decides
                py_need = (_py_fen(px * qty * inst.multiplier * rate + qty * inst.margin_per_lot)
                           + _py_fen(qty * inst.open_per_lot
                                     + px * qty * inst.multiplier * inst.open_ratio)
                           + inst.per_order_fee)
                if py_need > available:
                    return rejected(R.INSUFFICIENT_FUNDS,
                                    f"need {py_need / 100:.2f}, "
                                    f"available {<object>available / 100:.2f}")
                margin = <int64_t>mf
                fee = <int64_t>ff
        else:
            fee = _close_fee(inst, px, close_yd, close_td)

        # 11. self-trade prevention
        if side == SIDE_BUY:
            if gi.best_sell != NO_SELL and (market or ticks >= gi.best_sell):
                return rejected(R.SELF_TRADE,
                                f"crosses own sell at {<double>gi.best_sell * inst.tick:.6g}")
        elif gi.best_buy != NO_BUY and (market or ticks <= gi.best_buy):
            return rejected(R.SELF_TRADE,
                            f"crosses own buy at {<double>gi.best_buy * inst.tick:.6g}")

        self._reserve(a, i, now, side, offset, hedge, ord_type, tif, price, ticks, qty, large,
                      counts_open, margin, fee, close_yd, close_td)
        return None

    cdef int64_t _group_held(self, int64_t g, int64_t i, int64_t side) noexcept nogil:
        """``checks.engine.Engine._group_held``: the group's position on one side, pending
        opens included."""
        cdef int64_t k, held = 0
        cdef Position* p
        for k in range(self.group_start[g], self.group_start[g + 1]):
            p = &self.pos[self.group_members[k] * self.n_inst + i]
            if side == SIDE_BUY:
                held += p.long_td + p.long_yd + p.long_pending
            else:
                held += p.short_td + p.short_yd + p.short_pending
        return held

    # ---------------------------------------------------------------- reserve (accept)
    cdef int _alert(self, object event) except -1:
        if self.alerts is None:
            self.alerts = [event]
        else:
            self.alerts.append(event)
        return 0

    cdef int _reserve(self, int64_t a, int64_t i, int64_t now, int64_t side, int64_t offset,
                      int64_t hedge, int64_t ord_type, int64_t tif, double price,
                      int64_t ticks, int64_t qty, bint large, bint counts_open,
                      int64_t margin, int64_t fee, int64_t close_yd, int64_t close_td) except -1:
        """Reserve an order that passed: its slot in ``last_slot``, its alerts and trigger in
        ``last_alerts`` / ``last_trigger``."""
        cdef Account* acct = &self.accts[a]
        cdef Instrument* inst = &self.insts[i]
        cdef Position* pos = &self.pos[a * self.n_inst + i]
        cdef GroupInstrument* gi = &self.gis[acct.group * self.n_inst + i]
        cdef double frac = acct.warn_fraction
        cdef int64_t lvl, held, slot, k
        cdef bint before
        cdef Order* o
        cdef Ring* run
        self.alerts = None

        # rate windows and daily counts
        if acct.max_orders_per_sec < UNLIMITED:
            lvl = acct.lvl_orders
            before = ring_recent(&acct.orders, lvl, now, NS_PER_S)
            ring_append(&acct.orders, now)
            if not before and ring_recent(&acct.orders, lvl, now, NS_PER_S):
                self._alert(warn(R.ORDER_RATE, self.acct_scopes[a], "orders in the last second",
                                 lvl, acct.max_orders_per_sec))
        trigger = self._count_message(a, i, now)
        if counts_open:
            gi.open_volume += qty
            if acct.max_open_volume < UNLIMITED:
                lvl = acct.lvl_open_volume
                if gi.open_volume - qty < lvl <= gi.open_volume:
                    self._alert(warn(R.OPEN_VOLUME_LIMIT,
                                     f"{self.acct_scopes[a]}/{self.inst_symbols[i]}",
                                     "group opening volume", gi.open_volume,
                                     acct.max_open_volume))
        acct.open_orders += 1
        if acct.max_open_orders < UNLIMITED:
            lvl = acct.lvl_open_orders
            if acct.open_orders == lvl:
                self._alert(warn(R.OPEN_ORDERS_LIMIT, self.acct_scopes[a], "working orders", lvl,
                                 acct.max_open_orders))
        k = _repeat_slot(acct, i, side, offset, ticks, qty)
        if k < 0:
            k = _repeat_victim(acct, now)
            ring_clear(&acct.repeat_runs[k])
            acct.rk_used[k] = True
            acct.rk_inst[k] = i
            acct.rk_side[k] = side
            acct.rk_offset[k] = offset
            acct.rk_ticks[k] = ticks
            acct.rk_qty[k] = qty
        run = &acct.repeat_runs[k]
        before = ring_recent(run, acct.lvl_repeats, now, acct.repeat_window)
        ring_append(run, now)
        acct.rk_last[k] = now
        if (acct.lvl_repeats <= acct.max_repeats < UNLIMITED and not before
                and ring_recent(run, acct.lvl_repeats, now, acct.repeat_window)):
            self._alert(warn(R.REPEATED_ORDERS, self.acct_scopes[a],
                             f"identical orders in {<object>acct.repeat_window // 1_000_000} ms",
                             acct.lvl_repeats, acct.max_repeats))

        # position and funds reservations
        if offset == OFF_OPEN:
            if side == SIDE_BUY:
                pos.long_pending += qty
            else:
                pos.short_pending += qty
            if inst.position_limit < UNLIMITED:
                held = self._group_held(acct.group, i, side)
                lvl = warn_level(inst.position_limit, frac)
                if held - qty < lvl <= held:
                    self._alert(warn(R.POSITION_LIMIT,
                                     f"{self.acct_scopes[a]}/{self.inst_symbols[i]}",
                                     "position incl. pending opens", held, inst.position_limit))
        elif side == SIDE_SELL:
            pos.long_yd_frozen += close_yd
            pos.long_td_frozen += close_td
        else:
            pos.short_yd_frozen += close_yd
            pos.short_td_frozen += close_td
        acct.frozen_margin += margin
        acct.frozen_fee += fee
        acct.paid_fee += inst.per_order_fee

        # the order itself (checks.engine.Engine._new_ref), and the self-trade index
        if self.n_free:
            self.n_free -= 1
            slot = self.free_slots[self.n_free]
            self.orders[slot].gen += 1
        else:
            if self.n_slots == self.cap_slots:
                self.cap_slots = self.cap_slots * 2 if self.cap_slots else 64
                self.orders = <Order*>_grow(self.orders, self.cap_slots, sizeof(Order))
                self.free_slots = <int64_t*>_grow(self.free_slots, self.cap_slots, sizeof(int64_t))
            slot = self.n_slots
            self.n_slots += 1
            self.orders[slot].gen = 0
        o = &self.orders[slot]
        o.live = True
        o.acct = a
        o.inst = i
        o.side = side
        o.offset = offset
        o.hedge = hedge
        o.ord_type = ord_type
        o.tif = tif
        o.price = price
        o.ticks = ticks
        o.qty = qty
        o.leaves = qty
        o.cum = 0
        o.status = ST_PENDING_NEW
        o.opening = offset == OFF_OPEN
        o.large = large
        o.frozen_margin = margin
        o.frozen_fee = fee
        o.close_yd = close_yd
        o.close_td = close_td
        o.had_fill = False
        o.cancel_requested = False
        if ticks >= 0:
            if side == SIDE_BUY:
                levels_add(&gi.buys, ticks)
                if ticks > gi.best_buy:
                    gi.best_buy = ticks
            else:
                levels_add(&gi.sells, ticks)
                if ticks < gi.best_sell:
                    gi.best_sell = ticks
        self._hint(a, inst.hft_per_sec)
        self.last_slot = slot
        self.last_alerts = self.alerts
        self.last_trigger = trigger
        self.alerts = None
        return 0

    cdef void _hint(self, int64_t a, int64_t hft_per_sec) noexcept:
        """Where the account's next decide will read its windows (for ``decide`` to prefetch)."""
        cdef Account* acct = &self.accts[a]
        cdef void** hints = &self.ring_hints[N_HINTS * a]
        hints[0] = _ring_slot(&acct.orders, acct.max_orders_per_sec)
        hints[1] = _ring_slot(&acct.cancels, acct.max_cancels_per_sec)
        hints[2] = _ring_slot(&acct.msgs, acct.programmatic_per_sec)
        hints[3] = _ring_slot(&acct.msgs, acct.hft_max_per_sec if acct.hft_registered
                              and not acct.direct_access else hft_per_sec)

    cdef object _count_message(self, int64_t a, int64_t i, int64_t now):
        """Count one order or cancel message: HFT window, daily totals, product 信息量.

        Returns a trigger when the message makes an unregistered account programmatic and the
        account is configured to be stopped for it.
        """
        cdef Account* acct = &self.accts[a]
        cdef Instrument* inst = &self.insts[i]
        cdef ProductCounters* pc = &self.prods[a * self.n_prod + inst.product]
        cdef double frac = acct.warn_fraction
        cdef int64_t k = acct.programmatic_per_sec
        cdef int64_t per_day, lvl
        cdef double filled, otr
        cdef bint before
        trigger = 0
        before = ring_recent(&acct.msgs, k, now, NS_PER_S)
        ring_append(&acct.msgs, now)
        acct.day_msgs += 1
        if (acct.programmatic == PROG_NONE and not before
                and ring_recent(&acct.msgs, k, now, NS_PER_S)):
            acct.occasions += 1
            if acct.occasions == acct.programmatic_occasions and not acct.programmatic_flagged:
                acct.programmatic_flagged = True
                self._alert(alert(_CRITICAL, R.PROGRAMMATIC_BEHAVIOUR, self.acct_scopes[a],
                                  f"{acct.occasions} seconds with >= {k} orders+cancels today"))
                if acct.stop_programmatic:
                    trigger = R.PROGRAMMATIC_UNREGISTERED
        if acct.hft_registered and not acct.direct_access:
            per_day = acct.hft_max_per_day
        else:
            per_day = inst.hft_per_day
        if not acct.hft_flagged and (acct.day_msgs >= inst.hft_per_day
                                     or ring_recent(&acct.msgs, inst.hft_per_sec, now, NS_PER_S)):
            acct.hft_flagged = True
            self._alert(alert(_WARNING, R.HFT_CLASSIFIED, self.acct_scopes[a],
                              f"orders+cancels reached {inst.hft_per_sec}/s or "
                              f"{inst.hft_per_day}/day"))
        lvl = acct.lvl_hft_day if per_day == acct.hft_max_per_day else warn_level(per_day, frac)
        if acct.day_msgs == lvl:
            code = (R.HFT_LIMIT if acct.hft_registered and not acct.direct_access
                    else R.HFT_DIRECT_ACCESS if acct.direct_access else R.HFT_UNREGISTERED)
            self._alert(warn(code, self.acct_scopes[a], "orders+cancels today", lvl, per_day))
        pc.messages += 1
        if acct.max_messages < UNLIMITED:
            lvl = acct.lvl_messages
            if pc.messages == lvl:
                self._alert(warn(R.MESSAGE_LIMIT,
                                 f"{self.acct_scopes[a]}/{self.inst_products[i]}",
                                 "messages today", lvl, acct.max_messages))
        if acct.max_otr < INFINITY and pc.messages >= acct.otr_min_messages:
            filled = <double>(pc.filled_orders if pc.filled_orders > 1 else 1)
            otr = <double>pc.messages / filled - 1.0
            if otr >= acct.lvl_otr and not (pc.messages - 1 >= acct.otr_min_messages
                                            and <double>(pc.messages - 1) / filled - 1.0
                                            >= acct.lvl_otr):
                self._alert(warn(R.OTR_LIMIT, f"{self.acct_scopes[a]}/{self.inst_products[i]}",
                                 "order-to-trade ratio", f"{otr:.2f}", f"{acct.max_otr:.2f}"))
        if acct.message_fee > 0.0 and pc.messages == acct.message_fee_free + 1:
            self._alert(alert(_WARNING, R.MESSAGE_FEE,
                              f"{self.acct_scopes[a]}/{self.inst_products[i]}",
                              f"message fees accrue from now on ({acct.message_fee_free} free)"))
        return trigger

    cdef object _ref_of(self, int64_t slot):
        cdef int64_t gen = self.orders[slot].gen
        if gen < (1 << 30):
            return (gen << SLOT_BITS) | slot
        return (<object>gen << SLOT_BITS) | slot  # beyond int64: Python ints, as the reference

    cdef int64_t _slot_of(self, object ref) except -2:
        """The live slot ``ref`` names, or -1: ``self.orders.get(ref)`` of the reference."""
        cdef int overflow = 0
        cdef long long x
        cdef double d
        cdef int64_t slot, gen
        if PyLong_Check(ref):  # bools too: True == 1 as a dict key
            x = PyLong_AsLongLongAndOverflow(ref, &overflow)
            if overflow:
                if ref < 0 or (ref >> SLOT_BITS) >= (1 << 62):
                    return -1
                slot = ref & SLOT_MASK
                gen = ref >> SLOT_BITS
                if slot < self.n_slots and self.orders[slot].live and self.orders[slot].gen == gen:
                    return slot
                return -1
        elif PyFloat_Check(ref):  # 5.0 == 5 as a dict key
            d = PyFloat_AS_DOUBLE(ref)
            if not (d == ffloor(d) and fabs(d) < TWO_63):
                return -1
            x = <long long>d
        else:
            hash(ref)  # an unhashable reference raises, as dict.get does
            try:
                value = int(ref)
            except Exception:
                return -1
            if not (value == ref):
                return -1
            return self._slot_of(value)
        return self._slot_at(x)

    cdef int64_t _slot_at(self, int64_t ref) noexcept:
        """``_slot_of`` of an int64 reference."""
        cdef int64_t slot, gen
        if ref < 0:
            return -1
        slot = ref & SLOT_MASK
        gen = ref >> SLOT_BITS
        if slot < self.n_slots and self.orders[slot].live and self.orders[slot].gen == gen:
            return slot
        return -1

    # ---------------------------------------------------------------- cancels
    def cancel_request(self, ref, int64_t now):
        """A client asked to cancel a working order: count it. Cancels are never refused."""
        cdef int64_t slot, lvl, a
        cdef Order* o
        cdef Account* acct
        cdef bint before, at_limit
        if now >= self.day_end:
            self._roll_day(now)
        slot = self._slot_of(ref)
        if slot < 0:
            return Outcome(known=False)
        o = &self.orders[slot]
        a = o.acct
        acct = &self.accts[a]
        self.alerts = None
        o.cancel_requested = True
        if acct.max_cancels_per_sec < UNLIMITED:
            lvl = acct.lvl_cancels
            before = ring_recent(&acct.cancels, lvl, now, NS_PER_S)
            at_limit = ring_recent(&acct.cancels, acct.max_cancels_per_sec, now, NS_PER_S)
            ring_append(&acct.cancels, now)
            if not before and ring_recent(&acct.cancels, lvl, now, NS_PER_S):
                self._alert(warn(R.CANCEL_RATE, self.acct_scopes[a], "cancels in the last second",
                                 lvl, acct.max_cancels_per_sec))
            # Once when the limit is reached (as the reference): not one alert per cancel past it.
            if not at_limit and ring_recent(&acct.cancels, acct.max_cancels_per_sec, now, NS_PER_S):
                self._alert(alert(_CRITICAL, R.CANCEL_RATE, self.acct_scopes[a],
                                  "cancel rate limit reached: new orders are refused"))
        trigger = self._count_message(a, o.inst, now)
        self._hint(a, self.insts[o.inst].hft_per_sec)
        acct.paid_fee += self.insts[o.inst].per_cancel_fee
        self._count_contract_cancel(slot)
        alerts = self.alerts
        self.alerts = None
        return Outcome(alerts=alerts, trigger=trigger)

    cdef int _count_contract_cancel(self, int64_t slot) except -1:
        cdef Order* o = &self.orders[slot]
        cdef Account* acct = &self.accts[o.acct]
        cdef Instrument* inst = &self.insts[o.inst]
        cdef Position* pos = &self.pos[o.acct * self.n_inst + o.inst]
        scope = f"{self.acct_scopes[o.acct]}/{self.inst_symbols[o.inst]}"
        pos.cancels += 1
        self._count_alerts(pos.cancels, inst.cancel_limit, acct.warn_fraction,
                           R.CONTRACT_CANCEL_LIMIT, scope, "cancels today")
        if o.large:
            pos.large_cancels += 1
            self._count_alerts(pos.large_cancels, inst.large_cancel_limit, acct.warn_fraction,
                               R.LARGE_CANCEL_LIMIT, scope, "large-order cancels today")
        return 0

    cdef int _count_alerts(self, int64_t count, int64_t limit, double frac, object code,
                           object scope, str what) except -1:
        """``checks.engine._count_alerts``: warning at the fraction, critical at the limit."""
        if limit >= UNLIMITED:
            return 0
        if count == warn_level(limit, frac) and count < limit:
            self._alert(warn(code, scope, what, count, limit))
        if count == limit:
            self._alert(alert(_CRITICAL, code, scope,
                              f"{what}: limit {limit} reached; new opening orders refused"))
        return 0

    # ---------------------------------------------------------------- exchange events
    def apply_ack(self, ref, now):
        if not self._ack(self._slot_of(ref)):
            return Outcome(known=False)
        return Outcome()

    cdef bint ack_c(self, int64_t ref) except -1:
        """``apply_ack`` of an int64 reference, for the compiled order path: whether the
        reference was known (an ack sets off nothing else)."""
        return self._ack(self._slot_at(ref))

    cdef bint _ack(self, int64_t slot) except -1:
        if slot < 0:
            return False
        if self.orders[slot].status == ST_PENDING_NEW:
            self.orders[slot].status = ST_NEW
        return True

    def apply_reject(self, ref, now):
        """The exchange refused the order: release everything it holds."""
        cdef int64_t slot = self._slot_of(ref)
        if slot < 0:
            return Outcome(known=False)
        self._finish(slot, ST_REJECTED)
        return Outcome(finished=True)

    def apply_canceled(self, ref, int64_t now):
        """The order's remainder is cancelled (on request, or FAK/FOK automatically)."""
        cdef int64_t slot
        cdef Order* o
        if now >= self.day_end:
            self._roll_day(now)
        slot = self._slot_of(ref)
        if slot < 0:
            return Outcome(known=False)
        o = &self.orders[slot]
        self.alerts = None
        if not o.cancel_requested and o.tif != TIF_GFD and self.insts[o.inst].fak_counts_as_cancel:
            self._count_contract_cancel(slot)
        self._finish(slot, ST_CANCELED)
        alerts = self.alerts
        self.alerts = None
        return Outcome(finished=True, alerts=alerts)

    def apply_fill(self, ref, qty, px, int64_t now, self_trade=False):
        """A trade: move the position, turn frozen margin/fees into used margin/paid fees."""
        cdef int64_t slot, n
        cdef double p
        cdef int overflow = 0
        if now >= self.day_end:
            self._roll_day(now)
        slot = self._slot_of(ref)
        if slot < 0 or type(qty) is not int:
            return Outcome(known=False)
        n = PyLong_AsLongLongAndOverflow(qty, &overflow)
        if overflow or not 0 < n <= self.orders[slot].leaves:
            return Outcome(known=False)
        p = px  # a float, as the wire delivers it (None or a str raise, as math.isfinite does)
        if not (isfinite(p) and 0.0 < p <= MAX_PRICE):
            return Outcome(known=False)
        finished = self._fill(slot, n, p, now, self_trade)
        alerts = self.last_alerts
        self.last_alerts = None
        return Outcome(finished=finished, alerts=alerts, trigger=self.last_trigger)

    cdef int fill_c(self, int64_t ref, int64_t n, double p, int64_t now,
                    bint self_trade) except -1:
        """``apply_fill`` of an int64 reference, lots and a float price, for the compiled order
        path: 0 when the book refused it (nothing changed), 1 when it was applied, 2 when it
        also finished the order; its alerts and trigger in ``last_alerts`` / ``last_trigger``."""
        cdef int64_t slot
        if now >= self.day_end:
            self._roll_day(now)
        slot = self._slot_at(ref)
        if slot < 0 or not 0 < n <= self.orders[slot].leaves:
            return 0
        if not (isfinite(p) and 0.0 < p <= MAX_PRICE):
            return 0
        return 2 if self._fill(slot, n, p, now, self_trade) else 1

    cdef bint _fill(self, int64_t slot, int64_t n, double p, int64_t now,
                    bint self_trade) except -1:
        """Apply a fill the book can take (checked by the callers); whether it finished the
        order. Alerts and trigger in ``last_alerts`` / ``last_trigger``."""
        cdef int64_t leaves, release_margin, release_fee, value, margin, cost, total
        cdef int64_t from_yd, from_td, a, i
        cdef double q
        cdef bint finished, before
        cdef Order* o = &self.orders[slot]
        cdef Account* acct
        cdef Instrument* inst
        cdef Position* pos
        a = o.acct
        i = o.inst
        acct = &self.accts[a]
        inst = &self.insts[i]
        pos = &self.pos[a * self.n_inst + i]
        self.alerts = None
        trigger = 0
        q = <double>n
        leaves = o.leaves
        release_margin = muldiv(o.frozen_margin, n, leaves)
        release_fee = muldiv(o.frozen_fee, n, leaves)
        o.frozen_margin -= release_margin
        o.frozen_fee -= release_fee
        acct.frozen_margin -= release_margin
        acct.frozen_fee -= release_fee
        value = fen(p * q * inst.multiplier)
        if o.opening:
            if o.side == SIDE_BUY:
                margin = fen(p * q * inst.multiplier * inst.margin_long + q * inst.margin_per_lot)
                pos.long_td += n
                pos.long_pending -= n
                pos.long_cost += value
                pos.long_margin += margin
            else:
                margin = fen(p * q * inst.multiplier * inst.margin_short + q * inst.margin_per_lot)
                pos.short_td += n
                pos.short_pending -= n
                pos.short_cost += value
                pos.short_margin += margin
            acct.used_margin += margin
            acct.paid_fee += fen(q * inst.open_per_lot + p * q * inst.multiplier * inst.open_ratio)
        else:
            from_yd = n if n < o.close_yd else o.close_yd
            from_td = n - from_yd
            o.close_yd -= from_yd
            o.close_td -= from_td
            if o.side == SIDE_SELL:  # closing a long
                total = pos.long_td + pos.long_yd
                cost = muldiv(pos.long_cost, n, total)
                margin = muldiv(pos.long_margin, n, total)
                pos.long_yd -= from_yd
                pos.long_yd_frozen -= from_yd
                pos.long_td -= from_td
                pos.long_td_frozen -= from_td
                pos.long_cost -= cost
                pos.long_margin -= margin
                acct.realised += value - cost
            else:
                total = pos.short_td + pos.short_yd
                cost = muldiv(pos.short_cost, n, total)
                margin = muldiv(pos.short_margin, n, total)
                pos.short_yd -= from_yd
                pos.short_yd_frozen -= from_yd
                pos.short_td -= from_td
                pos.short_td_frozen -= from_td
                pos.short_cost -= cost
                pos.short_margin -= margin
                acct.realised += cost - value
            acct.used_margin -= margin
            acct.paid_fee += _close_fee(inst, p, from_yd, from_td)
        o.leaves -= n
        o.cum += n
        if not o.had_fill:
            o.had_fill = True
            self.prods[a * self.n_prod + inst.product].filled_orders += 1
        if self_trade and o.side == SIDE_BUY:  # both sides are ours: count the trade once
            pos.self_trades += 1
            self._count_alerts(pos.self_trades, inst.self_trade_limit, acct.warn_fraction,
                               R.SELF_TRADE_LIMIT,
                               f"{self.acct_scopes[a]}/{self.inst_symbols[i]}",
                               "self-trades today")
        if acct.max_executions < UNLIMITED:
            before = ring_recent(&acct.execs, acct.lvl_executions, now, acct.execution_window)
            ring_append(&acct.execs, now)
            if (acct.lvl_executions <= acct.max_executions and not before
                    and ring_recent(&acct.execs, acct.lvl_executions, now,
                                    acct.execution_window)):
                self._alert(warn(R.REPEATED_EXECUTIONS, self.acct_scopes[a],
                                 f"executions in {<object>acct.execution_window // 1_000_000} ms",
                                 acct.lvl_executions, acct.max_executions))
            if ring_recent(&acct.execs, acct.max_executions + 1, now, acct.execution_window):
                trigger = R.REPEATED_EXECUTIONS
                self._alert(alert(_CRITICAL, R.REPEATED_EXECUTIONS, self.acct_scopes[a],
                                  f"more than {acct.max_executions} executions in "
                                  f"{<object>acct.execution_window // 1_000_000} ms"))
        self._mark(a, i)
        loss = self._loss_check(a)
        if loss and not trigger:  # (repeated executions suspend: the stricter stop wins)
            trigger = loss
        finished = o.leaves == 0
        if finished:
            self._finish(slot, ST_FILLED)
        else:
            o.status = ST_PARTIALLY_FILLED
        self.last_alerts = self.alerts
        self.last_trigger = trigger
        self.alerts = None
        return finished

    cdef int _finish(self, int64_t slot, int64_t status) except -1:
        """Release everything a finished order still holds and drop it from the book."""
        cdef Order* o = &self.orders[slot]
        cdef Account* acct = &self.accts[o.acct]
        cdef Position* pos = &self.pos[o.acct * self.n_inst + o.inst]
        cdef GroupInstrument* gi = &self.gis[acct.group * self.n_inst + o.inst]
        acct.frozen_margin -= o.frozen_margin
        acct.frozen_fee -= o.frozen_fee
        o.frozen_margin = o.frozen_fee = 0
        if o.opening:
            if o.side == SIDE_BUY:
                pos.long_pending -= o.leaves
            else:
                pos.short_pending -= o.leaves
            if o.hedge != HEDGE_HEDGE:
                gi.open_volume -= o.leaves
        elif o.side == SIDE_SELL:
            pos.long_yd_frozen -= o.close_yd
            pos.long_td_frozen -= o.close_td
        else:
            pos.short_yd_frozen -= o.close_yd
            pos.short_td_frozen -= o.close_td
        o.close_yd = o.close_td = 0
        acct.open_orders -= 1
        if o.ticks >= 0:
            if o.side == SIDE_BUY:
                levels_remove(&gi.buys, o.ticks)
                gi.best_buy = levels_high(&gi.buys) if gi.buys.n else NO_BUY
            else:
                levels_remove(&gi.sells, o.ticks)
                gi.best_sell = levels_low(&gi.sells) if gi.sells.n else NO_SELL
        o.status = status
        o.live = False
        self.free_slots[self.n_free] = slot
        self.n_free += 1
        return 0

    # ---------------------------------------------------------------- market data and P&L
    def market_data(self, symbol, last_px, upper, lower, int64_t now):
        """Move the reference price (collars) and mark every holder's position (loss limit);
        ``Outcome.triggers`` names each account whose loss reached its limit."""
        cdef int64_t i, a, seen
        cdef double last, up, low
        cdef Instrument* inst
        if now >= self.day_end:  # a new day's prices count against the new day's P&L
            self._roll_day(now)
        found = self.inst_ids.get(symbol)
        if found is None:
            return Outcome(known=False)
        i = found
        inst = &self.insts[i]
        # the reference's short-circuit order of conversions, so the same bad value raises
        up = upper
        if isfinite(up):
            low = lower
            if isfinite(low) and 0.0 < low <= up <= MAX_PRICE:
                inst.upper = up
                inst.lower = low
        self.alerts = None
        triggers = None
        last = last_px
        if isfinite(last) and 0.0 < last <= MAX_PRICE:
            inst.ref_price = inst.mark = last
            seen = 0
            a = 0
            while seen < inst.n_holders:  # holders in account order, as sorted() gives them
                if self.pos[a * self.n_inst + i].holder:
                    seen += 1
                    self._mark(a, i)
                    trigger = self._loss_check(a)
                    if trigger:
                        if triggers is None:
                            triggers = []
                        triggers.append((self.acct_names[a], trigger))
                a += 1
        alerts = self.alerts
        self.alerts = None
        return Outcome(alerts=alerts, triggers=triggers)

    cdef int _mark(self, int64_t a, int64_t i) except -1:
        cdef Account* acct = &self.accts[a]
        cdef Instrument* inst = &self.insts[i]
        cdef Position* pos = &self.pos[a * self.n_inst + i]
        cdef int64_t long_qty = pos.long_td + pos.long_yd
        cdef int64_t short_qty = pos.short_td + pos.short_yd
        cdef int64_t value = (fen(inst.mark * <double>long_qty * inst.multiplier) - pos.long_cost
                              + pos.short_cost
                              - fen(inst.mark * <double>short_qty * inst.multiplier))
        acct.unrealised += value - pos.unrealised
        pos.unrealised = value
        if long_qty or short_qty:
            if not pos.holder:
                pos.holder = True
                inst.n_holders += 1
        elif pos.holder:
            pos.holder = False
            inst.n_holders -= 1
        return 0

    cdef object _loss_check(self, int64_t a):
        """``checks.engine.Engine._loss_check``: the warning, then the alert and the trigger."""
        cdef Account* acct = &self.accts[a]
        cdef int64_t pnl
        if acct.loss_limit >= UNLIMITED or acct.loss_stopped:
            return 0
        pnl = acct.realised + acct.unrealised - acct.paid_fee - acct.pnl_base
        if not acct.loss_warned and pnl <= -warn_level(acct.loss_limit, acct.warn_fraction):
            acct.loss_warned = True
            self._alert(alert(_WARNING, R.LOSS_WARNING, self.acct_scopes[a],
                              f"intraday P&L {<object>pnl / 100:.2f} against limit "
                              f"{<object>(-acct.loss_limit) / 100:.2f}"))
        if pnl > -acct.loss_limit:
            return 0
        acct.loss_stopped = True
        self._alert(alert(_CRITICAL, R.LOSS_LIMIT, self.acct_scopes[a],
                          f"intraday P&L {<object>pnl / 100:.2f} reached the loss limit "
                          f"{<object>(-acct.loss_limit) / 100:.2f}: opening orders are refused"))
        return R.LOSS_LIMIT if acct.status != ACCT_SUSPENDED else 0

    # ---------------------------------------------------------------- kill switch and admin
    cdef object _scope_key(self, object scope, object key):
        if scope == _FIRM:
            return 0
        if scope == _SESSION:
            return int(key)
        table = {_ACCOUNT: self.acct_ids, _GROUP: self.group_ids,
                 _INSTRUMENT: self.inst_ids, _PRODUCT: self.product_ids}[scope]
        if key not in table:
            raise KeyError(f"unknown {KillScope(scope).name.lower()} {key!r}")
        return table[key]

    cdef int _sync_kill(self, object scope, int64_t k) except -1:
        """Mirror the reference-shaped ``kills`` dict into the C flags decide() reads."""
        cdef unsigned char mode = self.kills[scope].get(k, 0)
        if scope == _FIRM:
            self.kill_firm = mode
        elif scope == _ACCOUNT:
            self.kill_acct[k] = mode
        elif scope == _GROUP:
            self.kill_group[k] = mode
        elif scope == _INSTRUMENT:
            self.kill_inst[k] = mode
        elif scope == _PRODUCT:
            self.kill_prod[k] = mode
        return 0  # sessions: decide() reads the dict itself

    def kill(self, scope, key="", close_only=False):
        """Block new orders (or openings only) in a scope; returns the refs to cancel."""
        k = self._scope_key(scope, key)
        self.kills[scope][k] = KILL_CLOSE_ONLY if close_only else KILL_BLOCK
        if not scope == _SESSION:
            self._sync_kill(scope, k)
        return self.open_orders(scope, key, opening_only=close_only)

    def reset(self, scope, key=""):
        kills = self.kills[scope]
        k = self._scope_key(scope, key)
        kills.pop(k, None)
        if not scope == _SESSION:
            self._sync_kill(scope, k)

    def killed(self):
        return sorted((s, k, m) for s, keys in self.kills.items() for k, m in keys.items())

    def open_orders(self, scope, key="", opening_only=False):
        """References of working orders in a scope (session scope: the caller knows them)."""
        cdef int64_t slot, kk = -1, which
        cdef Order* o
        k = self._scope_key(scope, key)
        out = []
        which = (1 if scope == _FIRM else 2 if scope == _ACCOUNT else 3 if scope == _GROUP
                 else 5 if scope == _INSTRUMENT else 6 if scope == _PRODUCT else 0)
        if which == 0:
            return out  # the session scope: no order matches
        if which != 1:
            kk = k
        for slot in range(self.n_slots):
            o = &self.orders[slot]
            if not o.live:
                continue
            if opening_only and not o.opening:
                continue
            if (which == 1 or (which == 2 and o.acct == kk)
                    or (which == 3 and self.accts[o.acct].group == kk)
                    or (which == 5 and o.inst == kk)
                    or (which == 6 and self.insts[o.inst].product == kk)):
                out.append(self._ref_of(slot))
        return sorted(out)

    def set_status(self, account, status):
        value = AccountStatus(status)
        self.accts[<int64_t>self._scope_key(_ACCOUNT, account)].status = value

    def set_programmatic(self, account, registration):
        value = ProgReg(registration)
        self.accts[<int64_t>self._scope_key(_ACCOUNT, account)].programmatic = value

    def set_hft(self, account, max_per_sec, max_per_day):
        """``checks.engine.Engine.set_hft``: the reported HFT maxima (0, 0: not registered)."""
        _reference.check_hft(max_per_sec, max_per_day)
        cdef int64_t a = self._scope_key(_ACCOUNT, account)
        cdef Account* acct = &self.accts[a]
        acct.hft_registered = max_per_sec > 0
        acct.hft_max_per_sec = max_per_sec
        acct.hft_max_per_day = max_per_day
        acct.lvl_hft_day = warn_level(acct.hft_max_per_day, acct.warn_fraction)
        if max_per_sec + 1 > acct.msgs.maxlen:
            ring_set_maxlen(&acct.msgs, max_per_sec + 1)

    def set_limits(self, account, limits):
        """Replace an account's limits (already validated and merged by the caller)."""
        cdef int64_t a = self._scope_key(_ACCOUNT, account), k
        cdef Account* acct = &self.accts[a]
        derived = types.SimpleNamespace(**self._limits_of(a))
        try:
            self.account_state_cls.set_limits(derived, limits)  # one home for limit derivation
        finally:  # (a malformed ``limits`` raises half-way: keep what the reference keeps)
            self._load_limits(a, derived)
        ring_set_maxlen(&acct.orders, max(1, min(acct.max_orders_per_sec, 1 << 20)))
        ring_set_maxlen(&acct.cancels, max(1, min(acct.max_cancels_per_sec, 1 << 20)))
        ring_set_maxlen(&acct.execs, max(1, min(acct.max_executions + 1, 1 << 20)))
        for k in range(REPEAT_KEYS):
            ring_set_maxlen(&acct.repeat_runs[k], max(1, min(acct.max_repeats, 1 << 20)))

    cdef dict _limits_of(self, int64_t a):
        """The account's limits as ``AccountState.set_limits`` names them."""
        cdef Account* c = &self.accts[a]
        return {
            "max_order_qty": c.max_order_qty, "max_notional": c.max_notional,
            "max_orders_per_sec": c.max_orders_per_sec,
            "max_cancels_per_sec": c.max_cancels_per_sec, "max_open_orders": c.max_open_orders,
            "max_open_volume": c.max_open_volume, "max_messages": c.max_messages,
            "max_otr": c.max_otr, "otr_min_messages": c.otr_min_messages,
            "message_fee": c.message_fee, "message_fee_free": c.message_fee_free,
            "max_repeats": c.max_repeats, "repeat_window": c.repeat_window,
            "max_executions": c.max_executions, "execution_window": c.execution_window,
            "loss_limit": c.loss_limit, "programmatic_per_sec": c.programmatic_per_sec,
            "programmatic_occasions": c.programmatic_occasions,
            "stop_programmatic": c.stop_programmatic, "warn_fraction": c.warn_fraction,
        }

    # ---------------------------------------------------------------- views
    cdef tuple _order_tuple(self, int64_t slot):
        """``OrderState.as_tuple``."""
        cdef Order* o = &self.orders[slot]
        return (self._ref_of(slot), o.acct, o.inst, o.side, o.offset, o.hedge, o.ord_type,
                o.tif, o.price, o.ticks, o.qty, o.leaves, o.cum, o.status, o.opening, o.large,
                o.frozen_margin, o.frozen_fee, o.close_yd, o.close_td, o.had_fill,
                o.cancel_requested)

    cdef tuple _account_tuple(self, int64_t a):
        """``checks.engine.account_tuple``."""
        cdef Account* c = &self.accts[a]
        repeats = tuple((k, (c.rk_inst[k], c.rk_side[k], c.rk_offset[k], c.rk_ticks[k],
                             c.rk_qty[k]), ring_tuple(&c.repeat_runs[k]))
                        for k in range(REPEAT_KEYS) if c.rk_used[k])
        return (c.status, c.programmatic, c.balance, c.frozen_margin, c.frozen_fee,
                c.used_margin, c.paid_fee, c.realised, c.unrealised, c.open_orders, c.day_msgs,
                c.occasions, c.programmatic_flagged, c.hft_flagged, c.loss_warned,
                ring_tuple(&c.orders), ring_tuple(&c.cancels), ring_tuple(&c.msgs),
                ring_tuple(&c.execs), repeats, c.pnl_base,
                c.loss_stopped)

    def order_view(self, ref):
        cdef int64_t slot = self._slot_of(ref)
        return None if slot < 0 else self._order_tuple(slot)

    def account_view(self, account):
        """``checks.engine.account_summary``."""
        cdef Account* c = &self.accts[<int64_t>self._scope_key(_ACCOUNT, account)]
        return {
            "account": self.acct_names[self.acct_ids[account]],
            "status": AccountStatus(c.status).name,
            "programmatic": ProgReg(c.programmatic).name,
            "balance": <object>c.balance / 100,
            "available": <object>_available(c) / 100,
            "used_margin": <object>c.used_margin / 100,
            "frozen_margin": <object>c.frozen_margin / 100,
            "frozen_fee": <object>c.frozen_fee / 100,
            "paid_fee": <object>c.paid_fee / 100,
            "realised_pnl": <object>c.realised / 100,
            "unrealised_pnl": <object>c.unrealised / 100,
            "open_orders": c.open_orders,
            "messages_today": c.day_msgs,
            "programmatic_flagged": c.programmatic_flagged,
            "hft_flagged": c.hft_flagged,
        }

    def snapshot(self):
        """The whole book as plain data: equal to ``checks.engine.Engine.snapshot()``."""
        cdef int64_t a, i, p, g, slot
        cdef Position* ps
        cdef ProductCounters* pc
        cdef GroupInstrument* gi
        cdef Instrument* inst
        positions = {}
        for a in range(self.n_acct):
            for i in range(self.n_inst):
                ps = &self.pos[a * self.n_inst + i]
                row = (ps.long_td, ps.long_yd, ps.short_td, ps.short_yd,
                       ps.long_td_frozen, ps.long_yd_frozen, ps.short_td_frozen,
                       ps.short_yd_frozen, ps.long_pending, ps.short_pending, ps.long_cost,
                       ps.short_cost, ps.long_margin, ps.short_margin, ps.unrealised,
                       ps.cancels, ps.large_cancels, ps.self_trades)
                if any(row):
                    positions[(self.acct_names[a], self.inst_symbols[i])] = row
        products = {}
        for a in range(self.n_acct):
            for p in range(self.n_prod):
                pc = &self.prods[a * self.n_prod + p]
                if pc.messages or pc.filled_orders:
                    products[(self.acct_names[a], p)] = (pc.messages, pc.filled_orders)
        groups = {}
        for g in range(self.n_group):
            for i in range(self.n_inst):
                gi = &self.gis[g * self.n_inst + i]
                if gi.open_volume or gi.buys.n or gi.sells.n:
                    groups[(g, self.inst_symbols[i])] = (gi.open_volume, gi.best_buy,
                                                         gi.best_sell, levels_tuple(&gi.buys),
                                                         levels_tuple(&gi.sells))
        instruments = {}
        for i in range(self.n_inst):
            inst = &self.insts[i]
            instruments[self.inst_symbols[i]] = (inst.ref_price, inst.mark, inst.upper,
                                                 inst.lower)
        return {
            "day": self.day,
            "accounts": {self.acct_names[a]: self._account_tuple(a) for a in range(self.n_acct)},
            "positions": positions,
            "products": products,
            "groups": groups,
            "orders": {self._ref_of(slot): self._order_tuple(slot)
                       for slot in range(self.n_slots) if self.orders[slot].live},
            "instruments": instruments,
            "kills": self.killed(),
        }
