"""Checks the commands make before they start anything, so a user's mistake is one line naming
the problem (exit status 2), not a traceback or a half-started pipeline.

Each check raises :class:`UsageError` with that line. They run before Redis, the broker or any
function process starts: a missing file found after four processes came up would leave the user
reading logs to learn it.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
from urllib.parse import urlsplit, urlunsplit

__all__ = ["UsageError", "REDIS_INSTALL_ADVICE", "check_input_file", "load_monitor_and_baseline",
           "check_redis_binary", "check_redis_url", "check_port_free", "check_trigger_files", "redact_url"]

REDIS_INSTALL_ADVICE = ("install it (`make redis` does on Debian/Ubuntu as root; otherwise "
                        "`sudo apt-get install redis-server`, `brew install redis`, ...) or pass --redis URL")


class UsageError(Exception):
    """A problem with what the user asked for; the message is the one line to print."""


def check_input_file(path: str, what: str) -> None:
    """``path`` must be a readable regular file."""
    if not os.path.exists(path):
        raise UsageError(f"{what} {path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path}: is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} {path}: not readable")


def load_monitor_and_baseline(monitor_path: str, baseline_path: str | None):
    """The monitor spec and the baseline document it will run with (``None`` without one),
    checked against each other as the functions will check them."""
    from modelmonitor.core.baseline import load_baseline
    from modelmonitor.core.spec import SpecError, load_monitor
    from modelmonitor.handlers import Monitor
    check_input_file(monitor_path, "monitor")
    try:
        spec = load_monitor(monitor_path)
    except SpecError as exc:
        raise UsageError(f"{monitor_path}: {exc}") from None
    path = baseline_path or (spec.baseline_ref or {}).get("file")
    where = "--baseline" if baseline_path else f"{monitor_path}: spec.baseline.file"
    baseline = None
    if path:
        if not os.path.exists(path):
            raise UsageError(f"{where} {path}: no such file (build one with `modelmonitor baseline`)")
        try:
            baseline = load_baseline(path)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{where} {path}: {_one_line(exc)}") from None
    try:
        Monitor(spec, baseline)
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"baseline {path} does not fit monitor {monitor_path}: {_one_line(exc)}") from None
    return spec, baseline


def check_redis_binary() -> None:
    """A private Redis needs ``redis-server`` on the PATH."""
    if shutil.which("redis-server") is None:
        raise UsageError(f"no redis-server on the PATH: {REDIS_INSTALL_ADVICE}")


def redact_url(url: str) -> str:
    """``url`` without its password, fit for a message."""
    try:
        parts = urlsplit(url)
        if parts.password:
            host = parts.hostname or ""
            if parts.port:
                host += f":{parts.port}"
            user = parts.username or ""
            return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))
    except ValueError:
        pass
    return url


def check_redis_url(url: str, timeout: float = 3.0) -> None:
    """The Redis at ``url`` answers PING within ``timeout`` seconds."""
    import redis
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError as exc:
        raise UsageError(f"--redis {redact_url(url)}: not a Redis URL ({_one_line(exc)})") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise UsageError(f"--redis {redact_url(url)}: cannot reach Redis ({_one_line(exc)})") from None
    finally:
        client.close()


def check_port_free(host: str, port: int, option: str = "--port") -> None:
    """Nothing listens on ``host:port`` yet (0 means any free port)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # The broker's server sets SO_REUSEADDR too: a port in TIME_WAIT is usable, one in use is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(f"{option} {port}: {host}:{port} is already in use "
                                 f"(another `modelmonitor run`?); choose another with {option}") from None
            raise UsageError(f"{option} {port}: cannot listen on {host}:{port} ({exc.strerror})") from None


def check_trigger_files(paths: list[str]) -> None:
    """Every ``--subscribe`` file exists and holds usable Trigger YAML."""
    from modelmonitor.local.broker import BrokerConfigError, load_triggers
    for path in paths:
        check_input_file(path, "--subscribe")
        try:
            load_triggers([path])
        except (BrokerConfigError, ValueError, OSError) as exc:
            raise UsageError(f"--subscribe {path}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
