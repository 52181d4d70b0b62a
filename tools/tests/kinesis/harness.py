"""Starts and stops a real `millrace serve` for the Kinesis API tests.

The binary comes from MILLRACE_BIN (set by the cargo test that runs these), the port is
chosen by the kernel (127.0.0.1:0) and read back from the server's log line.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading

import boto3
from botocore.config import Config

ACCESS_KEY = "MRTESTACCESSKEY0001"
SECRET_KEY = "test/secret+key/for/the/millrace/suite00"
REGION = "us-east-1"


class Server:
    def __init__(self, data_dir=None, extra_args=(), ttl_secs=300):
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="millrace-kinesis-")
        self.extra_args = list(extra_args)
        self.ttl_secs = ttl_secs
        self.process = None
        self.log = []

    def start(self):
        binary = os.environ["MILLRACE_BIN"]
        env = dict(os.environ)
        env["MILLRACE_ACCESS_KEY_ID"] = ACCESS_KEY
        env["MILLRACE_SECRET_ACCESS_KEY"] = SECRET_KEY
        args = [
            binary, "serve", "--data-dir", self.data_dir, "--cores", "2",
            "--http-listen", "127.0.0.1:0", "--quic-listen", "127.0.0.1:0", "--segment-mib", "4",
            "--iterator-ttl-secs", str(self.ttl_secs),
        ] + self.extra_args
        self.process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
        address = None
        self.quic_address = None
        for line in self.process.stderr:
            self.log.append(line)
            found = re.search(r"Kinesis API listening on http://([0-9.:]+)", line)
            if found:
                address = found.group(1)
            found = re.search(r"QUIC listening on ([0-9.:]+);", line)
            if found:
                self.quic_address = found.group(1)
            if "stop with Ctrl-C" in line:
                break
        if address is None:
            raise RuntimeError("millrace did not start:\n" + "".join(self.log))
        self.endpoint = "http://" + address
        # Keep draining the log so that the server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self):
        for line in self.process.stderr:
            self.log.append(line)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            code = self.process.wait(timeout=60)
            self.process.stderr.close()
            if code != 0:
                raise RuntimeError(f"millrace exited with {code}:\n" + "".join(self.log))

    def close(self):
        """Stops the server and removes its data directory."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self):
        """kill -9: no shutdown, no final sync; what was acknowledged must survive."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=60)
            self.process.stderr.close()

    def client(self, access_key=ACCESS_KEY, secret_key=SECRET_KEY, validate=False, service="kinesis", **config):
        # Client-side validation off: the server's own validation is what is tested.
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(parameter_validation=validate, retries={"max_attempts": 1, "mode": "standard"}, **config),
        )

    def cli_env(self):
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_DEFAULT_REGION=REGION,
            AWS_PAGER="",
        )
        env.pop("AWS_PROFILE", None)
        return env
