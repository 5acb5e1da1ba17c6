"""A small SMTP server for the tests (Debian's python3-aiosmtpd): every mail it
receives is written to OUTDIR as <n>.eml (the raw message, with an X-Rcpt-To line
of the envelope's recipients first). Usage: smtp_fixture.py PORT OUTDIR. Prints
"ready" once it listens; stops on SIGTERM."""
import asyncio
import os
import signal
import sys
import time

from aiosmtpd.controller import Controller


class Store:
    def __init__(self, outdir):
        self.outdir = outdir
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        name = os.path.join(self.outdir, f"{time.time_ns()}-{self.n}.eml")
        data = b"X-Rcpt-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n" + envelope.original_content
        with open(name + ".tmp", "wb") as f:
            f.write(data)
        os.rename(name + ".tmp", name)
        return "250 OK"


def main():
    port, outdir = int(sys.argv[1]), sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    c = Controller(Store(outdir), hostname="127.0.0.1", port=port)
    c.start()
    print("ready", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    while not stop:
        time.sleep(0.1)
    c.stop()


if __name__ == "__main__":
    main()
