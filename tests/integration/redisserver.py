"""A real redis-server for the Redis integration tests.

As hiredis's own test.sh does: a private temporary directory, a private TCP
port on 127.0.0.1 and a unix socket, no persistence; the fixture waits until
PING answers and kills the server at the end. `redis_auth_server` is the same
with `requirepass` (its password is a canary the tests look for in what the
agent and the log received).
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
CANARY_PASSWORD = "canary-pw-7f3a91"


class RedisServer:
    def __init__(self, password=None):
        # A short directory: unix socket paths are limited to 107 bytes.
        self.dir = tempfile.mkdtemp(prefix="ddsredis-")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.sock = os.path.join(self.dir, "redis.sock")
        self.password = password
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
               "--unixsocket", self.sock, "--unixsocketperm", "700",
               "--dir", self.dir, "--save", "", "--appendonly", "no",
               "--daemonize", "no", "--logfile", os.path.join(self.dir, "redis.log")]
        if password:
            cmd += ["--requirepass", password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def command(self, *args):
        """Send one command (RESP) and return the raw reply bytes."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection((self.host, self.port), timeout=2) as s:
            if self.password:
                s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(self.password), self.password.encode()))
                s.recv(1024)
            s.sendall(out)
            return s.recv(65536)

    def _ping(self):
        try:
            return self.command("PING").startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    @property
    def tcp(self):
        return "tcp:%s:%d" % (self.host, self.port)

    @property
    def unix(self):
        return "unix:" + self.sock

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server():
    r = RedisServer()
    yield r
    r.stop()


@pytest.fixture
def redis_auth_server():
    r = RedisServer(password=CANARY_PASSWORD)
    yield r
    r.stop()
