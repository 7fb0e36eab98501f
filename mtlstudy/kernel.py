"""How the kernels that execute our notebooks (the report's, a run's) start.

ipykernel warns on its stderr, into the terminal of `make demo`, when it talks to its client over
TCP without encryption ("susceptible to eavesdropping"). The kernel manager can give it CurveZMQ
keys (jupyter_client's `transport_encryption`, where pyzmq has CurveZMQ): its sockets are then
encrypted and it has nothing to warn about. Where it cannot, the kernel talks over Unix sockets
(IPC) in a private temporary folder instead of TCP. Nothing is filtered: every other line a
kernel prints still shows.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile


def kernel_config():
    """The traitlets Config to pass to papermill.execute_notebook (`config=`, as nbclient takes it)."""
    import zmq
    from jupyter_client import KernelManager
    from traitlets.config import Config

    if zmq.has("curve") and KernelManager.class_traits().get("transport_encryption") is not None:
        return Config({"KernelManager": {"transport_encryption": "auto"}})
    return Config({"KernelManager": {"transport": "ipc", "ip": f"{_socket_folder()}/kernel"}})


@functools.cache
def _socket_folder() -> str:
    """A private folder for this process's kernel sockets (the manager removes each kernel's), removed at exit."""
    folder = tempfile.mkdtemp(prefix="mtlstudy-kernels-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
