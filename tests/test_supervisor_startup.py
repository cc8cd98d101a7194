"""The supervisor's liveness probe spares a process that has not answered since it started
(a Kubernetes startup probe), until the startup deadline; then failures count as usual."""
import socket
import subprocess
import sys
import time

from modelmonitor.local.supervisor import Supervisor


class SilentProcess:
    """A real process that never opens its port (a function still importing under load)."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.name, self.host, self.proc = "slow-0", "127.0.0.1", None
        self.kills = 0
        self.start()

    def start(self, wait=False):
        self.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])

    @property
    def running(self):
        return self.proc.poll() is None

    @property
    def returncode(self):
        return self.proc.returncode

    @property
    def pid(self):
        return self.proc.pid

    def kill(self):
        self.kills += 1
        self.proc.kill()
        self.proc.wait()


def test_a_starting_process_is_not_killed_before_the_startup_deadline_but_is_after():
    proc = SilentProcess()
    sup = Supervisor([proc], probe_period=0.2, probe_timeout=0.2, failure_threshold=2,
                     poll=0.05, startup_deadline=3.0).start()
    try:
        time.sleep(2.0)   # ten probes have failed, all inside the startup deadline
        assert proc.kills == 0 and proc.running
        deadline = time.monotonic() + 30
        while proc.kills == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.kills >= 1, "a process silent past its startup deadline must be killed"
    finally:
        sup.stop()
        if proc.running:
            proc.proc.kill()
