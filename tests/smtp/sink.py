"""A real SMTP server for the email tests, on aiosmtpd (`pip install aiosmtpd`).

    python3 tests/smtp/sink.py FOLDER [--port N] [--cert FILE --key FILE
        [--implicit-tls]] [--auth USER:PASSWORD] [--data-delay-ms N]

Listens on 127.0.0.1 (on `--port`, or a free port) and prints
`listening PORT` once it accepts connections. Each message it accepts becomes
`FOLDER/NNNN.json`: the envelope (`mail_from`, `rcpt_tos`), the parsed mail
(`from`, `to`, `subject`, `message_id`, `dkim_signature`, `text`, `html`,
`raw`), MIME-decoded by Python's `email` package, and the session (`tls`:
whether it was encrypted, `login`: the user it authenticated as). Files
appear whole (written aside, then renamed).

Recipients choose how they are answered, so tests can watch deliveries fail:
- an address starting with `reject` is refused with
  `550 5.1.1 <address>: mailbox unavailable` (permanent);
- an address starting with `tempfail<N>-` is answered
  `421 4.3.0 try again later` the first N times a message for it comes
  (transient), then accepted.

`--cert`/`--key` offer STARTTLS and require it before MAIL (`--implicit-tls`:
TLS from the first byte instead, as `smtps://`). `--auth` requires AUTH
(PLAIN or LOGIN, only over TLS) with those credentials. `--data-delay-ms`
answers each accepted message that much later, after it is saved — the
window in which a client that dies has delivered without hearing so.

Exits when its stdin closes, so it never outlives the test that started it.
"""

import argparse
import asyncio
import collections
import email
import email.policy
import itertools
import json
import logging
import os
import re
import ssl
import sys
import threading
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

TEMPFAIL = re.compile(r"^tempfail(\d+)-")


class Sink:
    def __init__(self, folder, data_delay, implicit_tls):
        self.folder = folder
        self.implicit_tls = implicit_tls
        self.data_delay = data_delay
        self.numbers = itertools.count(1)
        self.tempfailed = collections.Counter()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        for address in envelope.rcpt_tos:
            m = TEMPFAIL.match(address)
            if m and self.tempfailed[address] < int(m.group(1)):
                self.tempfailed[address] += 1
                return "421 4.3.0 try again later"
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)

        def part(kind):
            body = message.get_body(preferencelist=(kind,))
            return body.get_content() if body is not None else None

        def header(name):
            value = message[name]
            return str(value) if value is not None else None

        login = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "from": header("From"),
            "to": header("To"),
            "subject": header("Subject"),
            "message_id": header("Message-ID"),
            "dkim_signature": header("DKIM-Signature"),
            "text": part("plain"),
            "html": part("html"),
            "raw": raw.decode("utf-8", "replace"),
            "tls": self.implicit_tls or session.ssl is not None,
            "login": login,
        }
        path = os.path.join(self.folder, f"{next(self.numbers):04}.json")
        with open(path + ".part", "w") as f:
            json.dump(record, f)
        os.replace(path + ".part", path)
        if self.data_delay:
            await asyncio.sleep(self.data_delay / 1000)
        return "250 2.0.0 Message accepted for delivery"


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        # handled=False: aiosmtpd answers the 535 itself.
        return AuthResult(success=False, handled=False)

    return authenticate


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


async def main(args):
    os.makedirs(args.folder, exist_ok=True)
    handler = Sink(args.folder, args.data_delay_ms, args.implicit_tls)
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    options = {"hostname": "sink.test"}
    if context is not None and not args.implicit_tls:
        options.update(tls_context=context, require_starttls=True)
    if args.auth:
        user, password = args.auth.split(":", 1)
        options.update(
            authenticator=authenticator_for(user, password),
            auth_required=True,
            # Implicit TLS is encrypted from the start; aiosmtpd only knows
            # of STARTTLS.
            auth_require_tls=not args.implicit_tls,
        )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, **options),
        "127.0.0.1",
        args.port,
        ssl=context if args.implicit_tls else None,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--implicit-tls", action="store_true")
    parser.add_argument("--auth")
    parser.add_argument("--data-delay-ms", type=int, default=0)
    # aiosmtpd's own warnings (AUTH over implicit TLS, which it cannot see
    # is encrypted; deprecations) are noise in the tests' output.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    asyncio.run(main(parser.parse_args()))
