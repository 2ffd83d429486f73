# cython: language_level=3
"""Typed interface of ``cext.engine``: the engine's C book (see ``cext/book.pxd``) and methods."""

cimport cython
from libc.stdint cimport int64_t

from cext.book cimport (
    Account, GroupInstrument, Instrument, Order, Position, ProductCounters, fk_name_slot,
)


@cython.final  # cdef methods are called directly (no vtable) and may be inlined
cdef class Engine:
    # what the reference exposes as plain attributes
    cdef readonly object cfg
    cdef readonly bint enforce_hours
    cdef readonly int64_t day_boundary
    cdef readonly int64_t day
    cdef readonly int64_t day_end
    cdef readonly int64_t msg_ring
    cdef readonly dict acct_ids      # account id -> index
    cdef readonly dict inst_ids      # symbol -> index
    cdef readonly dict product_ids   # product -> index
    cdef readonly dict group_ids     # group -> index
    cdef readonly dict kills         # scope -> {key: mode}, as the reference keeps it
    cdef readonly set automated_sessions

    # the C book (cext/book.pxd)
    cdef int64_t tod_start           # the second whose local time of day is in tod
    cdef int64_t tod
    cdef int64_t wday                # and its local weekday (Monday == 0)
    cdef tuple names                 # private copies of acct_ids and inst_ids
    cdef fk_name_slot* acct_table    # acct_ids and inst_ids as C tables (fk_name_lookup)
    cdef size_t acct_mask
    cdef void** acct_keys
    cdef fk_name_slot* inst_table
    cdef size_t inst_mask
    cdef void** inst_keys
    cdef int64_t n_acct
    cdef int64_t n_inst
    cdef int64_t n_prod
    cdef int64_t n_group
    cdef Account* accts
    cdef Instrument* insts
    cdef Position* pos               # [n_acct * n_inst]
    cdef ProductCounters* prods      # [n_acct * n_prod]
    cdef unsigned char* allowed      # [n_acct * n_prod]: product on the account's allow-list
    cdef GroupInstrument* gis        # [n_group * n_inst]
    cdef int64_t* sessions           # (start_s, end_s) pairs of every instrument
    # the order pool: slots, a LIFO free list (checks.engine.Engine._new_ref)
    cdef Order* orders
    cdef int64_t n_slots
    cdef int64_t cap_slots
    cdef int64_t* free_slots         # (as many as cap_slots)
    cdef int64_t n_free
    # kill switch: C flags for the hot path, the reference's dict for killed() and sessions
    cdef unsigned char kill_firm
    cdef unsigned char* kill_acct
    cdef unsigned char* kill_group
    cdef unsigned char* kill_inst
    cdef unsigned char* kill_prod
    cdef int64_t* acct_group          # accts[a].group, compact: the group line without acct's
    cdef int64_t* group_members       # account indices by group (checks.engine.group_members)
    cdef int64_t* group_start         # [n_group + 1]: group g's members are [start[g], start[g+1])
    cdef void** ring_hints            # [n_acct * 4]: where each account's windows will be read
    cdef dict session_kills          # kills[SESSION]: decide reads it directly
    # names, for texts and snapshots
    cdef list acct_names
    cdef list acct_scopes            # "account:<id>"
    cdef list inst_symbols
    cdef list inst_exchanges
    cdef list inst_products
    cdef object account_state_cls
    # alerts raised by the call in progress (None until the first one)
    cdef list alerts
    # what the last accepted order / applied fill left for its caller (decide_c, fill_c)
    cdef int64_t last_slot
    cdef object last_alerts
    cdef object last_trigger

    cdef int64_t _group_held(self, int64_t g, int64_t i, int64_t side) noexcept nogil
    cdef int _alert(self, object event) except -1
    cdef int _roll_day(self, int64_t now) except -1
    # the compiled order path's entries (gateway/fastroute.pyx): an order, an ack and a fill as
    # the wire carries them, no message or result objects on the common path
    cdef int64_t account_index(self, object account) noexcept
    cdef int64_t instrument_index(self, object symbol) noexcept
    cdef object decide_c(self, int64_t a, int64_t i, int64_t side, int64_t offset, int64_t hedge,
                         int64_t ord_type, int64_t tif, double price, int64_t qty, int64_t now,
                         object session)
    cdef bint ack_c(self, int64_t ref) except -1
    cdef int fill_c(self, int64_t ref, int64_t n, double p, int64_t now,
                    bint self_trade) except -1

    cdef object _accepted_decision(self)
    cdef void _prefetch_account(self, int64_t a) noexcept
    cdef void _prefetch(self, int64_t a, int64_t i) noexcept
    cdef object _check(self, object order, bint slots, int64_t a, int64_t i, int64_t side,
                       int64_t offset, int64_t hedge, int64_t ord_type, int64_t tif,
                       int64_t qty_c, double price_c, int64_t now, object session)
    cdef int _reserve(self, int64_t a, int64_t i, int64_t now, int64_t side, int64_t offset,
                      int64_t hedge, int64_t ord_type, int64_t tif, double price,
                      int64_t ticks, int64_t qty, bint large, bint counts_open,
                      int64_t margin, int64_t fee, int64_t close_yd, int64_t close_td) except -1
    cdef bint _ack(self, int64_t slot) except -1
    cdef bint _fill(self, int64_t slot, int64_t n, double p, int64_t now,
                    bint self_trade) except -1
    cdef int64_t _slot_at(self, int64_t ref) noexcept
    cdef object _count_message(self, int64_t a, int64_t i, int64_t now)
    cdef void _hint(self, int64_t a, int64_t hft_per_sec) noexcept
    cdef int _count_contract_cancel(self, int64_t slot) except -1
    cdef int _count_alerts(self, int64_t count, int64_t limit, double frac, object code,
                           object scope, str what) except -1
    cdef int _finish(self, int64_t slot, int64_t status) except -1
    cdef int _mark(self, int64_t a, int64_t i) except -1
    cdef object _loss_check(self, int64_t a)
    cdef int64_t _slot_of(self, object ref) except -2
    cdef object _ref_of(self, int64_t slot)
    cdef int _load_limits(self, int64_t a, object st) except -1
    cdef dict _limits_of(self, int64_t a)
    cdef object _scope_key(self, object scope, object key)
    cdef int _sync_kill(self, object scope, int64_t k) except -1
    cdef tuple _order_tuple(self, int64_t slot)
    cdef tuple _account_tuple(self, int64_t a)
