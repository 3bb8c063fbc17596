"""A real SMTP server for the email tests, on aiosmtpd (`pip install aiosmtpd`).

    python3 tests/smtp/sink.py FOLDER

Listens on 127.0.0.1 on a free port and prints `listening PORT` once it
accepts connections. Each message it accepts becomes `FOLDER/NNNN.json`:
the envelope (`mail_from`, `rcpt_tos`) and the parsed mail (`from`, `to`,
`subject`, `text`, `html`, `raw`), MIME-decoded by Python's `email` package.
Files appear whole (written aside, then renamed).

A recipient whose address starts with `reject` is refused with
`550 5.1.1 <address>: mailbox unavailable`, so tests can watch a delivery fail.

Exits when its stdin closes, so it never outlives the test that started it.
"""

import asyncio
import email
import email.policy
import itertools
import json
import os
import sys
import threading

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, folder):
        self.folder = folder
        self.numbers = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)

        def part(kind):
            body = message.get_body(preferencelist=(kind,))
            return body.get_content() if body is not None else None

        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "from": str(message["From"]),
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
            "text": part("plain"),
            "html": part("html"),
            "raw": raw.decode("utf-8", "replace"),
        }
        path = os.path.join(self.folder, f"{next(self.numbers):04}.json")
        with open(path + ".part", "w") as f:
            json.dump(record, f)
        os.replace(path + ".part", path)
        return "250 2.0.0 Message accepted for delivery"


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


async def main(folder):
    os.makedirs(folder, exist_ok=True)
    handler = Sink(folder)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.test"), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    asyncio.run(main(sys.argv[1]))
