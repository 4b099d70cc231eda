"""A local S3 API for the tests: moto's server mode on a free localhost port.

``S3Server`` starts ``python -m moto.server`` and points the standard AWS
settings at it (``AWS_ENDPOINT_URL`` and test credentials: what s3fs, boto3 and
every other S3 client read); nothing outside this machine is reached. Each test
gets a bucket of its own (``bucket`` in ``conftest.py``).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time

SETTINGS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        # (its log of every request goes to a file: a pipe nobody reads fills and
        # stops the server)
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    err = self.log.read().decode(errors="replace")
                    self.stop()
                    raise RuntimeError(
                        f"moto's S3 server did not start: {err[-2000:]}") from None
                time.sleep(0.05)

    def env(self) -> dict[str, str]:
        return {**SETTINGS, "AWS_ENDPOINT_URL": self.endpoint}

    def activate(self) -> None:
        os.environ.update(self.env())

    def new_bucket(self) -> str:
        import s3fs

        name = f"kerasave-{secrets.token_hex(6)}"
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.endpoint})
        fs.mkdir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
