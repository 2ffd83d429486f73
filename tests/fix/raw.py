"""A bare FIX client on a socket, for what a FIX engine would never send (fuzz, garbage,
silence): messages are built with the gateway's codec, or written as raw bytes."""

from __future__ import annotations

import socket
import time

from gateway.fix.codec import FixDecoder, FixMessage, Garbled, frame, utc_timestamp

T = 15.0


class RawFix:
    def __init__(self, port: int, sender: str = "MANUAL1", target: str = "FENGKONG") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=T)
        self.sender, self.target = sender, target
        self.seq = 1
        self.decoder = FixDecoder(1 << 24)
        self.pending: list[FixMessage] = []
        self.eof = False

    def build(self, mt: str, fields: list[tuple[int, object]], seq: int | None = None,
              poss_dup: bool = False) -> bytes:
        seq = self.seq if seq is None else seq
        header = f"49={self.sender}\x0156={self.target}\x0134={seq}\x01"
        if poss_dup:
            header += "43=Y\x01"
        header += f"52={utc_timestamp().decode()}\x01"
        if poss_dup:
            header += f"122={utc_timestamp().decode()}\x01"
        body = "".join(f"{t}={v}\x01" for t, v in fields)
        return frame(mt.encode(), header.encode(), body.encode())

    def send(self, mt: str, fields: list[tuple[int, object]] = (), **kw: object) -> bytes:
        data = self.build(mt, list(fields), **kw)  # type: ignore[arg-type]
        self.sock.sendall(data)
        if kw.get("seq") is None:
            self.seq += 1
        return data

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def logon(self, user: str = "manual1", password: str = "manual-secret", hb: int = 30,
              reset: bool = True) -> FixMessage:
        fields: list[tuple[int, object]] = [(98, 0), (108, hb)]
        if reset:
            fields.append((141, "Y"))
        self.send("A", fields + [(553, user), (554, password)])
        return self.wait("A", "5")

    def recv(self, timeout: float = T) -> FixMessage | None:
        """The next message, or None at end of stream."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            if self.eof:
                return None
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                return None
            self.pending += [m for m in self.decoder.feed(data) if type(m) is not Garbled]
        return self.pending.pop(0)

    def wait(self, *types: str, timeout: float = T) -> FixMessage:
        want = {t.encode() for t in types}
        while True:
            m = self.recv(timeout)
            if m is None:
                raise EOFError(f"connection closed while waiting for {types}")
            if m.msg_type in want:
                return m

    def wait_closed(self, timeout: float = T) -> list[FixMessage]:
        """Everything until the gateway closes the connection."""
        out = []
        while (m := self.recv(timeout)) is not None:
            out.append(m)
        return out

    def close(self) -> None:
        self.sock.close()
