"""A raw protocol connection for tests that must send what no well-behaved client would."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.protocol import FrameDecoder, Logon, LogonAck, MarketData, encode


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder(1 << 20)
        self.pending: list[Any] = []

    @classmethod
    async def open(cls, port: int, user: str | None = None) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = cls(reader, writer)
        if user is not None:
            conn.send(Logon(user, "", []))
            assert isinstance(await conn.recv(), LogonAck)
        return conn

    def send(self, msg: Any) -> None:
        self.writer.write(msg if isinstance(msg, bytes | bytearray) else encode(msg))

    async def recv(self, timeout: float = 5.0, skip_market_data: bool = True) -> Any:
        """The next message; ``EOFError`` when the server closed the connection."""
        while True:
            while self.pending:
                msg = self.pending.pop(0)
                if not (skip_market_data and isinstance(msg, MarketData)):
                    return msg
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("connection closed by the server")
            self.pending += self.decoder.feed(data)

    async def recv_until_eof(self, timeout: float = 5.0) -> list[Any]:
        out = []
        while True:
            try:
                out.append(await self.recv(timeout, skip_market_data=False))
            except EOFError:
                return out

    def close(self) -> None:
        self.writer.close()
