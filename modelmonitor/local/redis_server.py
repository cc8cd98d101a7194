"""Start and stop a private ``redis-server`` (for `run`, `replay`, tests) when no URL is given.

The private server binds to 127.0.0.1 on a free port, keeps its files in a temporary
directory and uses an append-only file fsynced on every write (``appendfsync always``), so an
acknowledged batch survives a restart of the server: that is what lets the aggregator answer a
request only once its batch is durable. With ``password`` it requires AUTH (``--requirepass``)
and its ``url`` carries the password.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import quote

import redis


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if not path:
        raise RuntimeError("redis-server is not installed: run `make install` (it installs one) "
                           "or pass --redis URL of a running Redis")
    return path


class RedisServer:
    """A private redis-server process. Use as a context manager or call start()/stop()."""

    def __init__(self, port: int | None = None, directory: str | None = None, *, durable: bool = True,
                 extra_args: list[str] | None = None, password: str | None = None):
        self.port = port or free_port()
        self.password = password
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="modelmonitor-redis-")
        self.durable = durable
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [redis_server_binary()]
        if self.password:
            # In a config file only the owner can read, not on the command line (which every
            # local user sees in ps / /proc/<pid>/cmdline). A config file must come first.
            conf = os.path.join(self.directory, "auth.conf")
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            escaped = self.password.replace("\\", "\\\\").replace('"', '\\"')
            with os.fdopen(fd, "w") as fh:
                fh.write(f'requirepass "{escaped}"\n')
            args.append(conf)
        args += ["--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.directory, "--save", "", "--protected-mode", "yes",
                "--logfile", os.path.join(self.directory, "redis.log")]
        if self.durable:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args + self.extra_args

    def start(self, timeout: float = 10.0) -> "RedisServer":
        # Its own process group: a terminal's Ctrl-C must not stop it before its users.
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     process_group=0)
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5,
                             password=self.password)
        while True:
            try:
                client.ping()
                client.close()
                return self
            except redis.exceptions.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port} "
                                       f"(log: {os.path.join(self.directory, 'redis.log')})")
                time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def connect(url: str, **kwargs):
    """A client for ``redis://``, ``rediss://`` (TLS, password in the URL) or a cluster
    (``redis+cluster://host:port``)."""
    if url.startswith("redis+cluster://"):
        from redis.cluster import RedisCluster
        return RedisCluster.from_url("redis://" + url[len("redis+cluster://"):], **kwargs)
    return redis.Redis.from_url(url, **kwargs)
