"""`keras_fgvc.serving.launch`: free ports, and the loopback server in a child process.

A server that starts, listens and stops (also when its parent is killed) is
tested where it is used: `tests/test_demo.py`, `tests/serving/test_server_e2e.py`.
"""

import socket

import pytest

from keras_fgvc.serving import launch


def test_free_ports_are_distinct_and_bindable():
    ports = launch.free_ports(5)
    assert len(set(ports)) == 5 and all(0 < p < 65536 for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    assert not launch.port_open(launch.free_port())


@pytest.mark.slow
def test_server_that_exits_at_start_up_raises_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    with pytest.raises(RuntimeError, match="exited with code") as error:
        launch.start_server(["--no_such_flag=1"], str(log), ready_timeout_s=300)
    assert "no_such_flag" in str(error.value)
