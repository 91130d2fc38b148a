"""A scriptable misbehaving memcached, for what real memcached cannot do on demand:
garbage replies, silence, closing mid-reply. Runs in a thread on 127.0.0.1."""
import socket
import threading


class FakeBackend:
    def __init__(self, behaviour):
        """behaviour(request_bytes) -> bytes to send, None to close the connection, or an
        iterator of bytes sent one after another for as long as it yields (a stream)."""
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.stopped = False
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(30)
        try:
            while not self.stopped:
                data = conn.recv(65536)
                if not data:
                    return
                out = self.behaviour(data)
                if out is None:
                    conn.close()
                    return
                if isinstance(out, bytes):
                    out = [out]
                for chunk in out:
                    if self.stopped:
                        return
                    conn.sendall(chunk)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopped = True
        self.sock.close()
