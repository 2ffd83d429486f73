"""The one table of reason codes.

Every rejection the gateway sends, every cancel-reject and every alert carries one of these
codes: a stable number (clients switch on it; it never changes meaning), a name, and a sentence
a person can read. The README's reason-code table is generated from this module
(``python -m checks.reasons``), so the two cannot drift.

Numbering follows docs/ARCHITECTURE.md §4's evaluation order: 1xx session/auth, 2xx kill switch,
3xx permissions, 4xx static validation, 5xx price, 6xx size, 7xx rates and counts,
8xx programmatic/HFT, 9xx positions, 10xx funds, 11xx self-trade, 12xx gateway/exchange,
13xx alert-only events.
"""

from __future__ import annotations

from enum import IntEnum


class Reason(IntEnum):
    description: str

    def __new__(cls, value: int, description: str) -> Reason:
        member = int.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    ACCEPTED = 0, "Accepted."

    # 1xx session and authentication (认证管理)
    NOT_LOGGED_ON = 101, "The session has not logged on; only logged-on sessions may send orders."
    AUTH_FAILED = 102, "Unknown user or wrong secret."
    LOCKED_OUT = 103, "Too many failed logons: the user is locked out for a while."
    IP_NOT_ALLOWED = 104, "The client address is not on the user's allow-list."
    ACCOUNT_NOT_PERMITTED = 105, "This session is not permitted to trade the account."
    DUPLICATE_CL_ORD_ID = 106, "cl_ord_id was already used by this session today."
    UNKNOWN_ACCOUNT = 107, "The account is not configured on this gateway."
    PROTOCOL_ERROR = 108, "Malformed or unexpected message."
    ALREADY_LOGGED_ON = 109, "The session is already logged on."
    APP_NOT_REGISTERED = 110, "The application id and auth code are not registered for this user (穿透式监管)."
    TERMINAL_INFO_INVALID = 111, "The terminal information in the Logon is malformed or too long."

    # 2xx kill switch (应急处置)
    KILLED_FIRM = 201, "Trading is stopped firm-wide by the kill switch."
    KILLED_ACCOUNT = 202, "Trading is stopped for this account by the kill switch."
    KILLED_GROUP = 203, "Trading is stopped for this account group by the kill switch."
    KILLED_SESSION = 204, "Trading is stopped for this session by the kill switch."
    KILLED_INSTRUMENT = 205, "Trading is stopped for this instrument by the kill switch."
    KILLED_PRODUCT = 206, "Trading is stopped for this product by the kill switch."

    # 3xx permissions (权限控制)
    ACCOUNT_SUSPENDED = 301, "The account is suspended; a person must re-enable it."
    ACCOUNT_CLOSE_ONLY = 302, "The account is close-only: opening orders are refused."
    PROGRAMMATIC_NOT_CONFIRMED = 303, "Automated trading needs a confirmed programmatic-trading registration."
    INSTRUMENT_NOT_PERMITTED = 304, "The account may not trade this instrument or product."
    ORD_TYPE_NOT_ALLOWED_ACCOUNT = 305, "The account may not use this order type."
    ORD_TYPE_NOT_ALLOWED_EXCHANGE = 306, "The exchange does not accept this order type or time-in-force."

    # 4xx static validation (错误防范)
    UNKNOWN_INSTRUMENT = 401, "Unknown instrument."
    MARKET_CLOSED = 402, "The instrument is not in a trading session now."
    INVALID_QTY = 403, "Quantity must be a positive whole number of lots."
    QTY_BELOW_MIN = 404, "Quantity is below the instrument's minimum volume for this order type."
    QTY_ABOVE_MAX = 405, "Quantity is above the instrument's maximum volume for this order type."
    INVALID_PRICE = 406, "Price must be a finite positive number."
    PRICE_NOT_ON_TICK = 407, "Price is not a whole multiple of the tick size."
    INVALID_FIELD = 408, "A field holds a value outside its enumeration."

    # 5xx price
    PRICE_ABOVE_UPPER_LIMIT = 501, "Price is above the daily upper limit (涨停板)."
    PRICE_BELOW_LOWER_LIMIT = 502, "Price is below the daily lower limit (跌停板)."
    PRICE_OUTSIDE_COLLAR = 503, "Price is outside the fat-finger collar around the reference price."

    # 6xx size
    QTY_ABOVE_ACCOUNT_MAX = 601, "Quantity is above the account's maximum per order."
    NOTIONAL_ABOVE_MAX = 602, "Notional (price x qty x multiplier) is above the account's maximum per order."

    # 7xx rates and counts (阈值管理, 异常监测)
    ORDER_RATE = 701, "Too many orders in the rolling second for this account."
    CANCEL_RATE = 702, "The account reached its cancels-per-second limit; new orders are refused until it falls."
    CONTRACT_CANCEL_LIMIT = 703, "The account reached its daily cancel limit on this contract; new opening orders on it are refused (closes pass)."
    LARGE_CANCEL_LIMIT = 704, "The account reached its daily large-order cancel limit on this contract; new large opening orders on it are refused (closes pass)."
    SELF_TRADE_LIMIT = 705, "The account reached its daily self-trade limit on this contract; new opening orders on it are refused (closes pass)."
    OPEN_VOLUME_LIMIT = 706, "The account group reached its daily opening volume on this contract (交易限额)."
    MESSAGE_LIMIT = 707, "The account reached its daily message cap on this product (信息量); opening orders are refused (closes pass)."
    OTR_LIMIT = 708, "The account's order-to-trade ratio on this product is above the cap; opening orders are refused (closes pass)."
    OPEN_ORDERS_LIMIT = 709, "Too many working orders for this account."
    REPEATED_ORDERS = 710, "Repeated identical orders (the same order N times within the window, whatever comes between): the account is stopped until a person re-enables it."
    REPEATED_EXECUTIONS = 711, "Repeated automated executions: the account is stopped until a person re-enables it."

    # 8xx programmatic and high-frequency trading (程序化交易 / 高频交易)
    PROGRAMMATIC_UNREGISTERED = 801, "Unregistered account shows programmatic trading behaviour and is stopped."
    HFT_UNREGISTERED = 802, "Order + cancel frequency reaches the high-frequency standard; the account is not registered for HFT."
    HFT_DIRECT_ACCESS = 803, "Direct-access members may not trade at high frequency."
    HFT_LIMIT = 804, "Order + cancel frequency exceeds the account's reported HFT maximum."

    # 9xx positions (验仓)
    INSUFFICIENT_POSITION = 901, "Not enough closable position for this closing order."
    POSITION_LIMIT = 902, "The order would take the position over the position limit (持仓限额), counted over the account group (实际控制关系) with pending opens."

    # 10xx funds (验资)
    INSUFFICIENT_FUNDS = 1001, "Available funds do not cover margin and fees."
    LOSS_LIMIT = 1002, "The intraday loss limit is reached."

    # 11xx self-trade (自成交)
    SELF_TRADE = 1101, "The order would trade against a resting order of the same account or group."

    # 12xx gateway and exchange
    EXCHANGE_UNAVAILABLE = 1201, "The exchange link is down; new orders are refused until it is back."
    EXCHANGE_REJECT = 1202, "The exchange rejected the order."
    UNKNOWN_ORDER = 1203, "No working order with that cl_ord_id in this session."
    ORDER_FINISHED = 1204, "The order is already filled, cancelled or rejected."
    SLOW_CONSUMER = 1205, "The session could not keep up with its reports and was closed."
    INTERNAL_ERROR = 1206, "Internal error; the order was not sent."
    SHUTTING_DOWN = 1207, "The gateway is shutting down."
    JOURNAL_UNAVAILABLE = 1208, "The audit journal cannot be written; new orders are refused until it can (cancels still go)."
    SAFE_MODE = 1209, "The journal is damaged: the gateway reconciles and cancels only, and trades no new orders until a person repairs it."

    # 13xx alert-only events
    THRESHOLD_WARNING = 1301, "A counter reached the warning fraction of its limit."
    PROGRAMMATIC_BEHAVIOUR = 1302, "An unregistered account shows programmatic trading behaviour."
    HFT_CLASSIFIED = 1303, "The account meets the high-frequency trading standard."
    KILL_SWITCH = 1304, "The kill switch was engaged or reset."
    LOSS_WARNING = 1305, "The account approaches its intraday loss limit."
    REJECT_STORM = 1306, "A session produced a storm of rejects."
    LINK_STATUS = 1307, "The exchange link went down or came back."
    MESSAGE_FEE = 1308, "Estimated message fees are accruing on a product."
    JOURNAL_FAILURE = 1309, "The audit journal failed (write error or damage found); see the alert text for where."
    UNKNOWN_EXCHANGE_ORDER = 1310, "The exchange reported an order the gateway did not know; it was adopted or cancelled by policy."
    SEAT_TAKEN_OVER = 1311, "Another connection took over the exchange seat; this gateway does not fight for it."
    EXCHANGE_SURPRISE = 1312, "The exchange sent a report the order's state did not expect (e.g. a reject after an ack)."
    KAFKA_LOSS = 1313, "The Kafka broker lost records the outbox had published; they are being published again."
    REPORT_NEEDS_CORRECTION = 1314, "The account's trading no longer matches its programmatic-trading report; it must correct the report before the grace period ends, or it goes close-only (art. 11)."

    @property
    def text(self) -> str:
        return self.description


KILL_REASON_BY_SCOPE_NAME = {
    "firm": Reason.KILLED_FIRM,
    "account": Reason.KILLED_ACCOUNT,
    "group": Reason.KILLED_GROUP,
    "session": Reason.KILLED_SESSION,
    "instrument": Reason.KILLED_INSTRUMENT,
    "product": Reason.KILLED_PRODUCT,
}


def markdown_table() -> str:
    """The reason-code table as Markdown, for the README."""
    rows = ["| code | name | meaning |", "|---:|---|---|"]
    rows += [f"| {r.value} | `{r.name}` | {r.description} |" for r in Reason]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
