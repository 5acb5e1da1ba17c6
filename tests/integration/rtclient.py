"""Minimal realtime clients for the tests: an SSE reader and a WebSocket client
(RFC 6455, masked frames), both on raw sockets so that nothing hides what the
server sends."""
import base64
import json
import os
import queue
import socket
import struct
import threading
import time


class SSE:
    """GET /api/realtime; events are parsed on a thread into a queue."""

    def __init__(self, url, headers=None, path="/api/realtime", read=True):
        port = int(url.rsplit(":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        hdrs = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{hdrs}\r\n".encode())
        self.events = queue.Queue()
        self.status = None
        self.closed = threading.Event()
        self.client_id = None
        if read:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
            ev = self.next(timeout=10)
            assert ev is not None and ev["event"] == "PB_CONNECT", ev
            self.client_id = json.loads(ev["data"])["clientId"]
            assert ev["id"] == self.client_id

    def _lines(self):
        """Yields the body's lines, undoing chunked transfer encoding."""
        f = self.sock.makefile("rb")
        status = f.readline()
        self.status = int(status.split()[1])
        chunked = False
        while True:
            line = f.readline()
            if not line or line in (b"\r\n", b"\n"):
                break
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        buf = b""
        while True:
            if chunked:
                size_line = f.readline()
                if not size_line:
                    return
                size = int(size_line.strip() or b"0", 16)
                if size == 0:
                    return
                data = f.read(size)
                f.readline()
            else:
                data = f.read1(65536)
                if not data:
                    return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield line.decode()

    def _run(self):
        ev = {}
        try:
            self.sock.settimeout(None)
            for line in self._lines():
                if line == "":
                    if ev:
                        self.events.put(ev)
                    ev = {}
                elif line.startswith(":"):
                    continue
                else:
                    k, _, v = line.partition(":")
                    ev[k] = v
        except OSError:
            pass
        self.closed.set()

    def next(self, timeout=5):
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def collect(self, quiet=0.5, until=None, timeout=30):
        """Events until none comes for `quiet` seconds; with `until`, first waits (up
        to `timeout` seconds) for that many, so a loaded machine's slow delivery is
        not read as a missing event."""
        out = []
        deadline = time.time() + timeout
        while until is not None and len(out) < until and time.time() < deadline:
            ev = self.next(timeout=max(deadline - time.time(), 0.01))
            if ev is None:
                break
            out.append(ev)
        while True:
            ev = self.next(timeout=quiet)
            if ev is None:
                return out
            out.append(ev)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class WS:
    """A WebSocket client: send JSON, receive JSON messages (text frames)."""

    def __init__(self, url, headers=None, path="/api/realtime/ws", connect=True):
        port = int(url.rsplit(":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        hdrs = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{hdrs}\r\n").encode())
        self.buf = b""
        head = self._read_until(b"\r\n\r\n")
        self.response = head.decode(errors="replace")
        self.status = int(self.response.split()[1])
        self.close_code = None
        self.close_reason = None
        self.client_id = None
        if self.status == 101 and connect:
            m = self.recv()
            assert m["type"] == "connect", m
            self.client_id = m["clientId"]

    def _read_until(self, marker):
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(marker, 1)
        return head

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_frame(self, opcode, payload, fin=True, mask=True):
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            head += bytes([mbit | n])
        elif n < 65536:
            head += bytes([mbit | 126]) + struct.pack(">H", n)
        else:
            head += bytes([mbit | 127]) + struct.pack(">Q", n)
        if mask:
            m = os.urandom(4)
            head += m
            payload = bytes(b ^ m[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + payload)

    def send(self, obj):
        self.send_frame(1, json.dumps(obj).encode())

    def recv_frame(self, timeout=5):
        self.sock.settimeout(timeout)
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        return b0 & 0x0F, self._read(n)

    def recv(self, timeout=5):
        """The next JSON message; answers pings; None once the server closed."""
        deadline = time.time() + timeout
        while True:
            try:
                op, payload = self.recv_frame(max(0.01, deadline - time.time()))
            except (socket.timeout, TimeoutError):
                return None
            except ConnectionError:
                return None
            if op == 1:
                return json.loads(payload)
            if op == 9:
                self.send_frame(0xA, payload)
            elif op == 8:
                self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                self.close_reason = payload[2:].decode(errors="replace")
                return None

    def collect(self, quiet=0.5):
        out = []
        while True:
            m = self.recv(timeout=quiet)
            if m is None:
                return out
            out.append(m)

    def request(self, obj, timeout=5):
        """Sends obj and returns the first reply that is not an event."""
        self.send(obj)
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.recv(timeout=deadline - time.time())
            if m is None:
                return None
            if m.get("type") != "event":
                return m
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
