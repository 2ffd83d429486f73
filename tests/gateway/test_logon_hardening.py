"""Logon hardening over real sockets, with an in-process gateway (issue 10, item 2): attempts of
one user are serialized and the lockout re-checked after the hash, the address is checked
before the secret, lockouts are per (user, source address) under a firm-wide guard, the
failure table is bounded, an operator can unlock a user (API and CLI, audited), and the KDF
cost is today's with older hashes still accepted and named for re-hashing."""

from __future__ import annotations

import asyncio
import collections
import threading

import aiohttp
import msgspec
import pytest

from checks.reasons import Reason
from gateway import auth
from gateway import session as session_mod
from gateway.auth import Lockout, check_secret_hash, hash_secret, needs_rehash, verify_secret
from gateway.cli import main as cli_main
from gateway.config import load_gateway_config
from gateway.protocol import FrameDecoder, Logon, LogonAck, LogonReject, encode
from gateway.server import Gateway
from simulator.client import Client
from tests.conftest import EXAMPLES

T = 10.0
RISK = "demo-risk-token"
VIEWER = "demo-viewer-token"


def _config(users_allow: dict[str, list[str]] | None = None, per_source: int = 16,
            **auth_fields):
    cfg = load_gateway_config(EXAMPLES / "gateway.toml")
    r = msgspec.structs.replace
    users = dict(cfg.users)
    for name, allow in (users_allow or {}).items():
        users[name] = r(users[name], ip_allow=allow)
    return r(cfg, gateway=r(cfg.gateway, port=0, logon_timeout_s=30.0,
                                  max_unauthenticated_per_source=per_source),
             admin=r(cfg.admin, port=0), users=users,
             auth=r(cfg.auth, **auth_fields),
             exchange=r(cfg.exchange, port=1, reconnect_min_s=5.0))  # no exchange


@pytest.fixture
async def make_gateway():
    started: list[Gateway] = []

    async def make(cfg) -> Gateway:
        gw = Gateway(cfg)
        await gw.start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.stop()


async def _open(port: int, local: str = "127.0.0.1"):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))


async def _answer(reader: asyncio.StreamReader):
    decoder = FrameDecoder()
    while True:
        data = await asyncio.wait_for(reader.read(4096), T)
        assert data, "closed without an answer"
        msgs = decoder.feed(data)
        if msgs:
            return msgs[0]


async def _logon(port: int, user: str, secret: str, local: str = "127.0.0.1"):
    reader, writer = await _open(port, local)
    writer.write(encode(Logon(user, secret, [], 5.0, True)))
    try:
        return await _answer(reader)
    finally:
        writer.close()


def _code(msg) -> int:
    return msg.reason if isinstance(msg, LogonReject) else 0


async def test_41_concurrent_logons_the_right_secret_last_is_refused_while_locked(make_gateway):
    gw = await make_gateway(_config(max_failures=5, per_source=64))
    conns = [await _open(gw.port) for _ in range(41)]
    # All at once, in one burst: 40 wrong secrets, the right one last.
    for n, (_, writer) in enumerate(conns):
        secret = "algo-secret" if n == 40 else f"wrong-{n}"
        writer.write(encode(Logon("algo1", secret, [], 5.0, True)))
    answers = await asyncio.gather(*(_answer(reader) for reader, _ in conns))
    for _, writer in conns:
        writer.close()
    codes = [_code(a) for a in answers]
    assert codes[40] == Reason.LOCKED_OUT  # the right secret, while locked: refused
    assert collections.Counter(codes) == {Reason.AUTH_FAILED: 4, Reason.LOCKED_OUT: 37}


async def test_a_disallowed_address_gets_104_whether_or_not_the_secret_is_right(
        make_gateway, monkeypatch):
    hashed = []
    real = session_mod.verify_secret
    monkeypatch.setattr(session_mod, "verify_secret", lambda *a: hashed.append(1) or real(*a))
    gw = await make_gateway(_config({"algo1": ["10.9.9.0/24"]}))
    for secret in ("wrong", "algo-secret", "wrong", "wrong", "wrong", "wrong", "algo-secret"):
        answer = await _logon(gw.port, "algo1", secret)
        assert _code(answer) == Reason.IP_NOT_ALLOWED
    assert not hashed  # the secret was never looked at
    assert gw.lockout.sizes() == (0, 0)


async def test_failures_from_another_address_do_not_lock_out_the_real_client(make_gateway):
    gw = await make_gateway(_config(max_failures=5))
    codes = [_code(await _logon(gw.port, "algo1", "wrong", local="127.0.0.2")) for _ in range(5)]
    assert codes[-1] == Reason.LOCKED_OUT
    # From the guessing address even the right secret is refused...
    assert _code(await _logon(gw.port, "algo1", "algo-secret", local="127.0.0.2")) \
        == Reason.LOCKED_OUT
    # ...while the real, colocated client logs on.
    assert isinstance(await _logon(gw.port, "algo1", "algo-secret"), LogonAck)
    status = gw.status()["logons"]
    assert status["locked_out"] == {"algo1": ["127.0.0.2"]}


async def test_unknown_user_names_do_not_grow_the_failure_table(make_gateway):
    gw = await make_gateway(_config(max_failures=5))
    for n in range(60):
        answer = await _logon(gw.port, f"nobody-{n}", "x", local="127.0.0.3")
        assert _code(answer) in (Reason.AUTH_FAILED, Reason.LOCKED_OUT)
    failures, locks = gw.lockout.sizes()
    assert failures + locks == 1  # one key for every unknown name from that address
    assert isinstance(await _logon(gw.port, "algo1", "algo-secret"), LogonAck)


def test_the_failure_tables_are_bounded():
    lock = Lockout(3, 60 * 10**9, 300 * 10**9, firm_max_failures=10**9, max_entries=100)
    for n in range(5000):
        for _ in range(3 if n % 2 else 1):
            lock.failed("algo1", n, source=f"10.0.{n // 256}.{n % 256}")
    failures, locks = lock.sizes()
    assert failures <= 100 and locks <= 100


def test_the_firm_wide_guard_refuses_new_addresses_but_not_known_good_ones():
    lock = Lockout(5, 60 * 10**9, 300 * 10**9, firm_max_failures=10)
    lock.succeeded("algo1", 0, source="127.0.0.1")
    for n in range(11):  # one failure each from 11 addresses: none is locked out by itself
        assert not lock.failed("algo1", 1 + n, source=f"10.0.0.{n}")
    assert lock.guard_tripped("10.0.0.99", 20)
    assert not lock.guard_tripped("127.0.0.1", 20)
    assert not lock.guard_tripped("10.0.0.99", 61 * 10**9 + 20)  # the window has passed


async def test_an_operator_unlocks_a_user_through_the_api_audited(make_gateway):
    gw = await make_gateway(_config(max_failures=2))
    for _ in range(2):
        await _logon(gw.port, "algo1", "wrong")
    assert _code(await _logon(gw.port, "algo1", "algo-secret")) == Reason.LOCKED_OUT
    url = f"http://127.0.0.1:{gw.admin.port}/v1/users/algo1/unlock"
    async with aiohttp.ClientSession() as http:
        async def post(token: str, body: dict, path: str = url):
            async with http.post(path, json=body,
                                 headers={"Authorization": f"Bearer {token}"}) as resp:
                return resp.status, await resp.json()

        assert (await post(VIEWER, {"reason": "x"}))[0] == 403
        assert (await post(RISK, {}))[0] == 400  # a reason is required
        assert (await post(RISK, {"reason": "x"}, url.replace("algo1", "nobody")))[0] == 404
        status, body = await post(RISK, {"reason": "client confirmed a config typo"})
    assert status == 200 and body["unlocked"] == ["127.0.0.1"]
    entry = gw.killswitch.history[-1]
    assert (entry["action"], entry["key"], entry["operator"], entry["reason"]) == (
        "unlock_user", "algo1", "risk-officer-li", "client confirmed a config typo")
    assert isinstance(await _logon(gw.port, "algo1", "algo-secret"), LogonAck)


async def test_the_unlock_command_calls_the_admin_plane(make_gateway, capsys):
    gw = await make_gateway(_config(max_failures=1))
    await _logon(gw.port, "algo1", "wrong")
    admin = f"http://127.0.0.1:{gw.admin.port}"
    code = await asyncio.to_thread(cli_main, ["unlock", "algo1", "--reason", "typo",
                                              "--admin", admin, "--token", RISK])
    assert code == 0
    assert "unlocked algo1: lockout lifted from 127.0.0.1" in capsys.readouterr().out
    assert isinstance(await _logon(gw.port, "algo1", "algo-secret"), LogonAck)
    code = await asyncio.to_thread(cli_main, ["unlock", "nobody", "--reason", "typo",
                                              "--admin", admin, "--token", RISK])
    err = capsys.readouterr().err
    assert code == 1 and "unknown user" in err and "Traceback" not in err


async def test_concurrent_hashes_are_bounded(make_gateway, monkeypatch):
    running, most = 0, 0
    guard = threading.Lock()
    release = threading.Event()
    pool_full = threading.Event()

    def verify(stored: str, secret: str) -> bool:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
            if running == 2:
                pool_full.set()
        release.wait(T)
        with guard:
            running -= 1
        return False

    monkeypatch.setattr(session_mod, "verify_secret", verify)
    gw = await make_gateway(_config(max_concurrent_hashes=2, max_failures=100))
    users = ["algo1", "manual1", "nobody"]
    tasks = [asyncio.create_task(_logon(gw.port, u, "wrong", local=f"127.0.1.{n}"))
             for n, u in enumerate(users * 3)]
    # The pool is full: two hashes running, the rest waiting.
    assert await asyncio.to_thread(pool_full.wait, T)
    release.set()
    answers = await asyncio.gather(*tasks)
    assert all(_code(a) == Reason.AUTH_FAILED for a in answers)
    assert most <= 2


def test_new_hashes_use_todays_cost_and_old_ones_still_verify():
    assert auth.SCRYPT_N >= 2**17
    new = hash_secret("s3cret")
    assert new.split("$")[1] == str(2**17) and not needs_rehash(new)
    assert verify_secret(new, "s3cret") and not verify_secret(new, "other")
    old = hash_secret("s3cret", n=2**14)
    assert check_secret_hash(old) is None and needs_rehash(old)
    assert verify_secret(old, "s3cret")
    assert check_secret_hash(old.replace("$16384$", "$1000$")) is not None  # not a power of 2


async def test_users_with_old_hashes_are_named_for_rehashing(make_gateway):
    gw = await make_gateway(_config())
    assert gw.status()["logons"]["users_to_rehash"] == ["algo1", "manual1"]
    c = await Client.connect("127.0.0.1", gw.port, "algo1", "algo-secret")  # still accepted
    await c.close()


async def test_under_the_firm_guard_a_user_s_own_allow_list_still_logs_on(make_gateway):
    """Failures from many addresses trip the firm-wide guard: an address that never logged on
    is refused, unless the user's allow-list names it (algo1 allows 127.0.0.0/8; manual1 has
    no list)."""
    gw = await make_gateway(_config(firm_max_failures=3))
    for n in range(4):
        answer = await _logon(gw.port, "manual1", "wrong", local=f"127.0.6.{n + 1}")
        assert _code(answer) == Reason.AUTH_FAILED
    assert _code(await _logon(gw.port, "manual1", "manual-secret", local="127.0.6.99")) \
        == Reason.LOCKED_OUT
    assert isinstance(await _logon(gw.port, "algo1", "algo-secret", local="127.0.6.98"), LogonAck)
