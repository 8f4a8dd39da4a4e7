"""A counting SMTP sink for the relay benchmark: accepts every message on 127.0.0.1 and keeps nothing.

Run as `python -m tests.bench.sink [--port P]` (port 0, the default, picks a free one).
It prints `READY <port>` once listening. On standard input it answers `count` with
`COUNT <messages> <recipients> <bytes>` (totals since start) and stops on `quit` or
end of input, so it never outlives the benchmark that started it. It listens on the
loopback address only and never connects anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from aiosmtpd.smtp import SMTP, Envelope, Session

HOST = "127.0.0.1"


class CountingHandler:
    def __init__(self) -> None:
        self.messages = 0
        self.recipients = 0
        self.bytes = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages += 1
        self.recipients += len(envelope.rcpt_tos)
        self.bytes += len(envelope.original_content or b"")
        return "250 OK"


async def _commands() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(port: int) -> None:
    handler = CountingHandler()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench-sink", decode_data=False, enable_SMTPUTF8=True),
        host=HOST,
        port=port,
    )
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    commands = await _commands()
    try:
        while line := await commands.readline():
            command = line.strip().decode("ascii", "replace")
            if command == "count":
                print(f"COUNT {handler.messages} {handler.recipients} {handler.bytes}", flush=True)
            elif command == "quit":
                break
    finally:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(run(parser.parse_args().port))


if __name__ == "__main__":
    main()
