"""A fault-injecting HTTP proxy for object-storage tests: put it in front of an S3 endpoint (moto, MinIO) on
loopback and point AWS_ENDPOINT_URL at it, and a seeded fraction of requests fail the way object stores fail.

    python tests/faultproxy.py http://127.0.0.1:9000 --rate 0.2 --seed 0 --port 9100
    AWS_ENDPOINT_URL=http://127.0.0.1:9100 lift score ...

Per request, with a seeded RNG (the sequence of draws is fixed; which request gets which draw depends on the order
requests arrive in, as ranks and threads race):
- exactly a fraction `rate` of requests fails: every block of N requests (N the denominator of `rate` as a fraction,
  at most 100: 5 for 0.2) holds rate x N failures in random places, so the first n requests hold n x rate failures
  give or take one block's; the kind is drawn uniformly from `kinds`:
  `500`   an S3 `InternalError` XML error body, status 500, before forwarding (the store is not touched);
  `503`   an S3 `SlowDown` XML error body, status 503, before forwarding;
  `reset` the connection is reset (TCP RST) after the request was read and before forwarding;
  `cut`   GET only (other requests draw among the other kinds; with `cut` alone they are forwarded): forwarded, the
          response headers and half the body sent, then the connection reset, the way a load balancer drops a
          download mid-stream;
- independently, with probability `delay_rate`, the request is held `delay_s` seconds before it is handled.

Failures that happen before forwarding never change the store. `cut` is limited to GET because a real store may
also lose the response to a write it applied, and repeating such a write is safe for single PUTs (what lift uses
for objects up to s3fs's 50 MiB block size) but not for a CompleteMultipartUpload.

`FaultProxy` runs the proxy as its own process, as a real store is one: in the process under test, every fork (a
DataLoader's workers) would copy the proxy's sockets, and a reset or close would not reach the client while any
copy is open, turning each injected fault into a read timeout. `GET /__faultproxy__/stats` answers its counters.

This is a test utility (standard library only); nothing in a stage imports it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ("500", "503", "reset", "cut")
STATS = "/__faultproxy__/stats"  # answered by the proxy itself, never forwarded or counted
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
}


@dataclass
class Faults:
    """What the proxy does to requests (see the module docstring)."""

    rate: float = 0.2
    kinds: tuple[str, ...] = KINDS
    delay_rate: float = 0.0
    delay_s: float = 0.2
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.rate <= 1.0 or not 0.0 <= self.delay_rate <= 1.0:
            raise ValueError(f"rates must be within [0, 1], got rate={self.rate}, delay_rate={self.delay_rate}")
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"fault kinds must be some of {KINDS}, got {self.kinds}")


class _Reset(Exception):
    """Abort the exchange with a TCP reset."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients pool their connections
    timeout = 120  # seconds a client may stay silent mid-request before the proxy drops it
    server: "_Server"

    def log_message(self, *args) -> None:  # the proxy is quiet; `FaultProxy.stats` says what happened
        pass

    def _body(self) -> bytes:
        """The request body as sent: Content-Length bytes, or the raw chunked stream (aws-chunked uploads)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers (checksums of aws-chunked), up to the empty line
                        trailer = self.rfile.readline()
                        raw += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._body()
        fault, delay = self.server.draw(self.command)
        if delay:
            time.sleep(self.server.faults.delay_s)
        self.server.count(self.command, fault, delay)
        if fault == "reset":
            raise _Reset
        if fault in _ERRORS:
            status, code, message = _ERRORS[fault]
            xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                   f"<RequestId>faultproxy</RequestId></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(xml)
            return
        status, headers, payload = self.server.forward(self.command, self.path, self.headers, body)
        self.send_response_only(status)
        for key, value in headers:
            self.send_header(key, value)
        if self.command != "HEAD" and not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault == "cut" and len(payload) > 1:
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            raise _Reset
        self.wfile.write(payload)

    def _stats(self) -> None:
        with self.server.lock:
            body = json.dumps(dict(self.server.stats)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _dispatch(self) -> None:
        if self.path == STATS:
            return self._stats()
        try:
            self._handle()
        except _Reset:
            self._reset()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True  # the client gave up first (its own read timeout)

    def _reset(self) -> None:
        """Close with SO_LINGER 0, so the peer sees a reset rather than an orderly end."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self.close_connection = True
        self.wfile = _Sink()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _dispatch


class _Sink:
    """Where the handler's final flush goes after the socket was reset."""

    closed = False

    def write(self, data) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, target: str, faults: Faults):
        super().__init__(address, _Handler)
        parsed = urllib.parse.urlsplit(target)
        self.target = (parsed.hostname, parsed.port or 80)
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.block: list[bool] = []  # whether each request left in the current block fails
        self.lock = threading.Lock()
        self.stats: Counter = Counter()
        self.local = threading.local()

    def draw(self, method: str) -> tuple[str | None, bool]:
        """(the fault or None, whether to delay) for one request; `cut` applies to GET only."""
        kinds = [k for k in self.faults.kinds if k != "cut" or method == "GET"]
        with self.lock:
            if not self.block:
                share = Fraction(self.faults.rate).limit_denominator(100)
                self.block = [i < share.numerator for i in range(share.denominator)]
                self.rng.shuffle(self.block)
            fails = self.block.pop()
            kind = self.rng.choice(kinds) if kinds else None
            delay = self.rng.random() < self.faults.delay_rate
        return (kind if fails else None), delay

    def count(self, method: str, fault: str | None, delay: bool) -> None:
        with self.lock:
            self.stats["requests"] += 1
            self.stats[fault or "forwarded"] += 1
            self.stats[f"{method} requests"] += 1
            if delay:
                self.stats["delayed"] += 1

    def forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, list, bytes]:
        """One exchange with the upstream over this thread's keep-alive connection (reopened once if stale)."""
        for attempt in (0, 1):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(*self.target, timeout=60)
            try:
                conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                for key, value in headers.items():
                    if key.lower() not in _HOP or (key.lower() == "transfer-encoding" and body):
                        conn.putheader(key, value)
                conn.endheaders(body or None)
                resp = conn.getresponse()
                payload = resp.read()
                kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
                if resp.will_close:
                    conn.close()
                    self.local.conn = None
                return resp.status, kept, payload
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def handle_error(self, request, client_address) -> None:  # a dropped client is part of the game: stay quiet
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class FaultProxy:
    """The proxy on 127.0.0.1 in a process of its own: `with FaultProxy(target, Faults(rate=0.2)) as p: p.url`."""

    def __init__(self, target: str, faults: Faults | None = None, port: int = 0):
        self.target, self.faults, self.port = target.rstrip("/"), faults or Faults(), port
        self.url = ""
        self._process: subprocess.Popen | None = None
        self._final: Counter | None = None  # the counters at `stop`

    def start(self) -> FaultProxy:
        f = self.faults
        self._process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), self.target, "--port", str(self.port), "--rate", str(f.rate),
             "--kinds", ",".join(f.kinds), "--delay-rate", str(f.delay_rate), "--delay", str(f.delay_s),
             "--seed", str(f.seed)], stdout=subprocess.PIPE, text=True)
        line = self._process.stdout.readline()
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"faultproxy did not start: {line!r}")
        self.url = line.strip()
        return self

    @property
    def stats(self) -> Counter:
        """Requests seen, forwarded, delayed, and failed per kind; once stopped, the counts at the stop."""
        if self._final is not None:
            return self._final
        with urllib.request.urlopen(self.url + STATS, timeout=30) as resp:
            return Counter(json.load(resp))

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._final = self.stats
            self._process.terminate()
            self._process.wait(timeout=30)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tests/faultproxy.py", description=__doc__.split("\n\n")[0])
    p.add_argument("target", help="upstream endpoint, e.g. http://127.0.0.1:9000")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    p.add_argument("--rate", type=float, default=0.2, help="fraction of requests that fail (default: 0.2)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated fault kinds (default: {','.join(KINDS)})")
    p.add_argument("--delay-rate", type=float, default=0.0, help="fraction of requests delayed (default: 0)")
    p.add_argument("--delay", type=float, default=0.2, help="seconds a delayed request is held (default: 0.2)")
    p.add_argument("--seed", type=int, default=0, help="RNG seed (default: 0)")
    args = p.parse_args(argv)
    faults = Faults(args.rate, tuple(k for k in args.kinds.split(",") if k), args.delay_rate, args.delay, args.seed)
    server = _Server(("127.0.0.1", args.port), args.target.rstrip("/"), faults)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)  # the first line: where to point clients
    print(f"faultproxy: -> {args.target} ({faults}); counters at {STATS}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
