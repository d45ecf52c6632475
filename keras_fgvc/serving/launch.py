"""Launch the loopback server in a child process; free loopback ports (demo, tests, benchmarks).

`start_server` runs ``serving/server.py`` (the entry point, with its
``tensorflow_model_server`` flags) in a child process and returns a
`ServerProcess`: it knows the bound gRPC port once the server prints its
start-up line (``--port=0`` picks a free one), stops the server with SIGTERM
(SIGKILL if it does not exit) and, used as a context manager, stops it on the
way out, errors and Ctrl-C included. The child gets SIGTERM when the process
that started it dies, however it dies (Linux ``PR_SET_PDEATHSIG``, set before
the server starts), so no server outlives its caller. Its output goes to a log
file.

Example:

    with start_server(["--port=0", "--model_name=det", "--model_base_path=models/det"],
                      "server.log", ready_timeout_s=300) as server:
        client = PredictionClient(f"127.0.0.1:{server.port}")

Imports only the standard library (no TensorFlow, no grpc).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER_SCRIPT = os.path.join(REPO, "serving", "server.py")
# What `keras_fgvc.serving.server.run_server` prints once the gRPC port is bound.
_LISTENING = re.compile(r"Running gRPC ModelServer at [^:\s]+:(\d+) \(pid")


def free_ports(count, host="127.0.0.1"):
    """`count` distinct TCP ports on `host` that were free just now (held together, then freed)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            sockets.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port(host="127.0.0.1"):
    """A TCP port on `host` that was free just now."""
    return free_ports(1, host)[0]


def port_open(port, host="127.0.0.1"):
    """Whether something accepts TCP connections on `host`:`port`."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class ServerProcess:
    """A ``serving/server.py`` child process (from `start_server`).

    Attributes:
        proc: the `subprocess.Popen` (its pid is the server's).
        log_path: the file holding the server's stdout and stderr.
        port: the bound gRPC port, once `wait_until_listening` has seen it.
    """

    def __init__(self, proc, log_path):
        self.proc, self.log_path, self.port = proc, log_path, None

    @property
    def pid(self):
        return self.proc.pid

    def poll(self):
        return self.proc.poll()

    def log_tail(self, lines=15):
        """The last `lines` lines of the server's log ("" without a log file)."""
        if self.log_path == os.devnull:
            return ""
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def wait_until_listening(self, timeout_s=300.0):
        """The bound gRPC port, read from the server's start-up line in its log.

        Raises:
            RuntimeError: the server exited first (the message holds the log's tail).
            TimeoutError: no start-up line within `timeout_s`.
        """
        if self.log_path == os.devnull:
            raise ValueError("The port is read from the server's log: start it with a log_path.")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with open(self.log_path, errors="replace") as f:
                found = _LISTENING.search(f.read())
            if found:
                self.port = int(found.group(1))
                return self.port
            if self.proc.poll() is not None:
                raise RuntimeError(f"The model server exited with code {self.proc.returncode}:"
                                   f"\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"The model server did not start in {timeout_s} s:\n{self.log_tail()}")

    def stop(self, timeout_s=20.0):
        """SIGTERM (graceful shutdown), SIGKILL after `timeout_s`; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


def start_server(server_flags, log_path=None, env=None, cwd=None, ready_timeout_s=None,
                 new_session=False):
    """Start ``serving/server.py *server_flags`` in a child process; returns a `ServerProcess`.

    Args:
        server_flags: the server's flags, e.g. ``["--port=0", "--model_name=det",
            "--model_base_path=/models/det"]``.
        log_path: file for the server's stdout and stderr (None: discarded).
        env: the child's environment (default this process's), with
            ``TF_CPP_MIN_LOG_LEVEL=2`` unless it sets one.
        cwd: the child's working directory.
        ready_timeout_s: when given, wait until the server listens (its port is then
            ``.port``); a server that exits or does not start in time is stopped and
            raises (see `ServerProcess.wait_until_listening`).
        new_session: run the child in its own session, so a Ctrl-C in the terminal
            reaches only the caller, whose clean-up stops the server (default: the
            caller's session and process group).
    """
    if not os.path.isfile(SERVER_SCRIPT):
        raise FileNotFoundError(f"{SERVER_SCRIPT} not found: the server entry point is run "
                                "from a checkout of the repository.")
    env = dict(os.environ if env is None else env)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log_path = log_path or os.devnull
    command = [sys.executable, "-m", "keras_fgvc.serving.launch", str(os.getpid()), SERVER_SCRIPT,
               *[str(f) for f in server_flags]]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                start_new_session=new_session)
    server = ServerProcess(proc, log_path)
    if ready_timeout_s is not None:
        try:
            server.wait_until_listening(ready_timeout_s)
        except BaseException:
            server.stop()
            raise
    return server


def _exec_server(parent_pid, script, *server_flags):
    """In the child: SIGTERM when `parent_pid` dies, then become ``python script flags``."""
    try:  # Linux PR_SET_PDEATHSIG; it survives the exec below.
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))
    except (OSError, AttributeError):
        pass
    if os.getppid() != int(parent_pid):
        sys.exit("The process that started the server is gone.")
    os.execv(sys.executable, [sys.executable, script, *server_flags])


if __name__ == "__main__":
    _exec_server(*sys.argv[1:])
