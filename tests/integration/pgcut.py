"""A TCP proxy in front of PostgreSQL (or PgBouncer) that cuts one connection at a
chosen point of the wire protocol, for the write path's fault tests
(test_pg_cut.py): deterministic where stopping the database is a matter of timing.

An action is armed with a trigger (bytes the client sends, e.g. b"_events" for the
outbox statement) and fires on the nth time a client message carrying it is seen:
- hold: the server's answers to it are held back that many seconds first (so that
  other writes queue behind it and the writer's next batch is a group commit);
- cut: after forwarding that many complete server messages of the answer, both
  sockets are closed (cut=0: the request reaches the server, no answer comes back;
  cut=-1: the request itself never reaches the server).
"""
import socket
import struct
import threading
import time


class Action:
    def __init__(self, trigger, nth=1, hold=0.0, cut=None):
        self.trigger, self.nth, self.hold, self.cut = trigger, nth, hold, cut
        self.seen = 0
        self.fired = threading.Event()


class CutProxy:
    def __init__(self, host, port):
        self.target = (host, port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.actions = []
        self.closed = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, trigger, nth=1, hold=0.0, cut=None):
        a = Action(trigger, nth, hold, cut)
        with self.lock:
            self.actions.append(a)
        return a

    def disarm(self):
        with self.lock:
            self.actions = []

    def close(self):
        self.closed = True
        self.lsock.close()
        for c in list(self.conns):
            for s in c:
                try:
                    s.close()
                except OSError:
                    pass

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            st = {"action": None, "sent": 0, "hold_until": 0.0, "dead": False}
            self.conns.append((client, server))
            threading.Thread(target=self._up, args=(client, server, st), daemon=True).start()
            threading.Thread(target=self._down, args=(client, server, st), daemon=True).start()

    def _kill(self, client, server, st):
        st["dead"] = True
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _up(self, client, server, st):
        """Client to server: looks for the triggers."""
        tail = b""
        while not st["dead"]:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._kill(client, server, st)
                return
            seen = tail + data
            tail = seen[-64:]
            fire = None
            with self.lock:
                if st["action"] is None:
                    for a in self.actions:
                        if a.trigger in seen and not a.fired.is_set():
                            a.seen += 1
                            if a.seen == a.nth:
                                fire = a
                                a.fired.set()
                                self.actions.remove(a)
                                break
            if fire is not None:
                if fire.cut is not None and fire.cut < 0:
                    self._kill(client, server, st)
                    return
                st["sent"] = 0
                st["hold_until"] = time.time() + fire.hold
                st["action"] = fire
            try:
                server.sendall(data)
            except OSError:
                self._kill(client, server, st)
                return

    def _down(self, client, server, st):
        """Server to client, message by message (type byte, int32 length)."""
        buf = b""
        while not st["dead"]:
            try:
                data = server.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._kill(client, server, st)
                return
            buf += data
            out = b""
            while len(buf) >= 5:
                n = struct.unpack("!I", buf[1:5])[0]
                if len(buf) < 1 + n:
                    break
                msg, buf = buf[:1 + n], buf[1 + n:]
                a = st["action"]
                if a is not None:
                    wait = st["hold_until"] - time.time()
                    if wait > 0:
                        if out:
                            client.sendall(out)
                            out = b""
                        time.sleep(wait)
                    if a.cut is not None and st["sent"] >= a.cut:
                        if out:
                            try:
                                client.sendall(out)
                            except OSError:
                                pass
                        self._kill(client, server, st)
                        return
                    st["sent"] += 1
                    if msg[:1] == b"Z" and a.cut is None:
                        st["action"] = None  # its answer ended: this connection is done with it
                out += msg
            if out:
                try:
                    client.sendall(out)
                except OSError:
                    self._kill(client, server, st)
                    return
