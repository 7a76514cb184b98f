"""The emulator's machinery: a loopback HTTP server, seeded faults, a billing counter,
an async job store and a transcript oracle. Provider routes (one module each, beside this
one) speak the real request/response shapes and verify the real signatures on top of it.

It is a test bed, and says so: every response carries ``X-Mooer-Emulator: 1`` and
``GET /__emulator__`` describes it.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Protocol

# The fault catalogue of reference/providers.md (b); each route maps a drawn fault onto
# its provider's own envelope and ignores the ones its provider cannot produce.
FAULTS = (
    "rate_limit",  # retryable throttling, with Retry-After where the provider sends one
    "server_error",  # transient 5xx / InternalError
    "timeout",  # hang past the client's timeout, then drop the connection
    "ambiguous_submit",  # the job is created (and billed), then the connection is reset
    "malformed",  # truncated JSON / HTML error page / missing fields
    "job_failed",  # the async job ends in failure
    "no_speech",  # success with an empty result
    "stuck",  # the job never leaves the queue
    "unknown_job",  # the provider forgot the job (expired)
    "auth",  # signature/key rejected (fatal)
    "quota",  # balance or quota exhausted (fatal)
    "too_large",  # input too large (item-fatal)
    "action_retired",  # API retired (fatal)
    "partial",  # MT: fewer results than inputs
)
EMULATOR_HEADER = "X-Mooer-Emulator"
CONTROL_PREFIX = "/__emulator__"


@dataclass
class FaultPlan:
    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def parse(cls, spec: str | None) -> "FaultPlan":
        """``"rate_limit=0.05,server_error=0.05,seed=7"``; ``"storm=0.2"`` spreads 20%
        evenly over the transient, ambiguous and job-level faults."""
        plan = cls()
        for piece in filter(None, (p.strip() for p in (spec or "").split(","))):
            name, sep, value = piece.partition("=")
            if not sep:
                raise ValueError(f"expected FAULT=RATE pairs, found {piece!r}")
            if name == "seed":
                plan.seed = int(value)
            elif name == "storm":
                storm = ("rate_limit", "server_error", "timeout", "ambiguous_submit", "malformed", "job_failed", "unknown_job", "partial")
                for fault in storm:
                    plan.rates[fault] = plan.rates.get(fault, 0.0) + float(value) / len(storm)
            elif name in FAULTS:
                plan.rates[name] = float(value)
            else:
                raise ValueError(f"unknown fault {name!r}: expected one of {', '.join(FAULTS)}, storm or seed")
        return plan

    def draw(self, provider: str, operation: str, key: str, attempt: int, allowed: tuple[str, ...]) -> str | None:
        """The fault for this request, deterministic in (seed, provider, op, key, attempt)."""
        candidates = [(f, self.rates.get(f, 0.0)) for f in allowed if self.rates.get(f, 0.0) > 0]
        if not candidates:
            return None
        digest = hashlib.sha256(f"{self.seed}|{provider}|{operation}|{key}|{attempt}".encode()).digest()
        roll = random.Random(digest).random()
        for fault, rate in candidates:
            if roll < rate:
                return fault
            roll -= rate
        return None


@dataclass
class EmuRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body.decode("utf-8") or "{}")

    def form(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))


@dataclass
class EmuResponse:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    action: str | None = None  # "hang" (stall past the client timeout, then drop) | "reset"

    @classmethod
    def json(cls, payload, status: int = 200, headers: dict[str, str] | None = None) -> "EmuResponse":
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return cls(status, body, {"Content-Type": "application/json", **(headers or {})})


class Route(Protocol):
    provider: str

    def matches(self, request: EmuRequest) -> bool: ...

    def handle(self, request: EmuRequest, emulator: "Emulator") -> EmuResponse: ...


class Oracle:
    """What the emulated services answer: transcripts by audio content (SHA-256 of the
    bytes received) and translations by source text. Unknown audio gets a labelled
    placeholder, so nothing emulated can pass for a real label."""

    def __init__(self, audio: dict[str, dict] | None = None, translations: dict[str, str] | None = None,
                 engine: Callable[[bytes], dict] | None = None):
        self.audio = audio or {}
        self.translations = translations or {}
        self.engine = engine  # answers audio the oracle file does not know (a local ASR engine)

    @classmethod
    def load(cls, path: Path | None) -> "Oracle":
        if path is None:
            return cls()
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data.get("audio", {}), data.get("translations", {}))

    def transcript(self, audio_bytes: bytes) -> dict:
        """``{"language", "sentences": [{"start", "end", "text"}]}`` for these bytes."""
        digest = hashlib.sha256(audio_bytes).hexdigest()
        if digest in self.audio:
            return self.audio[digest]
        if self.engine is not None:
            return self.engine(audio_bytes)
        return {"language": None, "sentences": [{"start": 0.0, "end": 1.0, "text": f"EMULATED TRANSCRIPT {digest[:8]}"}]}

    def translate(self, text: str, target: str = "en") -> str:
        if text in self.translations:
            return self.translations[text]
        return f"[emulated {target}] {hashlib.sha256(text.encode()).hexdigest()[:8]}"


@dataclass
class Job:
    id: str
    provider: str
    key: str
    payload: dict
    created: float
    outcome: str = "ok"  # ok | failed | no_speech | stuck
    result: dict | None = None


class JobStore:
    """Async jobs: QUEUED, then RUNNING, then done after ``job_seconds`` of wall time."""

    def __init__(self, job_seconds: float = 0.2):
        self.job_seconds = job_seconds
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._counter = 0

    def create(self, provider: str, key: str, payload: dict, outcome: str = "ok", result: dict | None = None, numeric: bool = False) -> Job:
        with self._lock:
            self._counter += 1
            job_id = str(10_000_000_000 + self._counter) if numeric else hashlib.sha1(f"{provider}{self._counter}{key}".encode()).hexdigest()
            job = Job(job_id, provider, key, payload, time.monotonic(), outcome, result)
            self._jobs[job_id] = job
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(str(job_id))

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(str(job_id), None)

    def state(self, job: Job) -> str:
        """queued | running | done | failed | no_speech"""
        age = time.monotonic() - job.created
        if job.outcome == "stuck" or age < self.job_seconds / 2:
            return "queued"
        if age < self.job_seconds:
            return "running"
        return {"ok": "done"}.get(job.outcome, job.outcome)


class Billing:
    """Billable calls, per provider and operation, and per item key (to prove "paid once")."""

    def __init__(self) -> None:
        self._calls: Counter = Counter()
        self._by_key: Counter = Counter()
        self._lock = threading.Lock()

    def charge(self, provider: str, operation: str, key: str, units: float = 1.0) -> None:
        with self._lock:
            self._calls[f"{provider}:{operation}"] += units
            self._by_key[f"{provider}:{operation}:{key}"] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"calls": dict(self._calls), "by_key": dict(self._by_key)}


class TokenBucket:
    """The provider's own rate limit, enforced server side (requests beyond it get the
    provider's throttling answer)."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


class Emulator:
    """Dispatches requests to provider routes; owns faults, billing, jobs and the oracle."""

    def __init__(
        self,
        routes: list[Route],
        oracle: Oracle | None = None,
        faults: FaultPlan | None = None,
        credentials: dict[str, dict[str, str]] | None = None,
        latency: float = 0.0,
        rate: float | None = None,
        hang_seconds: float = 5.0,
        job_seconds: float = 0.2,
        audio_root: Path | None = None,
    ):
        self.routes = routes
        self.oracle = oracle or Oracle()
        self.faults = faults or FaultPlan()
        self.credentials = credentials or {}
        self.latency = latency
        self.hang_seconds = hang_seconds
        self.audio_root = Path(audio_root) if audio_root else None
        self.jobs = JobStore(job_seconds)
        self.billing = Billing()
        self.requests: Counter = Counter()
        self._attempts: Counter = Counter()
        self._buckets: dict[str, TokenBucket] = {}
        self._rate = rate
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.base_url: str | None = None

    # -- used by routes ------------------------------------------------------------
    def fault(self, provider: str, operation: str, key: str, allowed: tuple[str, ...]) -> str | None:
        with self._lock:
            attempt = self._attempts[(provider, operation, key)]
            self._attempts[(provider, operation, key)] += 1
        return self.faults.draw(provider, operation, key, attempt, allowed)

    def within_rate(self, provider: str, operation: str) -> bool:
        if not self._rate:
            return True
        with self._lock:
            bucket = self._buckets.setdefault(f"{provider}:{operation}", TokenBucket(self._rate))
        return bucket.take()

    def secret(self, provider: str, name: str) -> str:
        try:
            return self.credentials[provider][name]
        except KeyError:
            raise KeyError(f"the emulator has no {name!r} credential for {provider!r}") from None

    def fetch_url(self, url: str) -> bytes:
        """What a URL-only service does with the staged URL: download it."""
        parsed = urllib.parse.urlparse(url)
        if self.audio_root and parsed.path.startswith("/audio/") and parsed.port == (self._server.server_address[1] if self._server else None):
            served = self._serve_audio(parsed.path)
            if served.status != 200:
                raise urllib.error.HTTPError(url, served.status, "not found", {}, io.BytesIO(served.body))
            return served.body
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback test bed
            return response.read()

    # -- dispatch ------------------------------------------------------------------
    def handle(self, request: EmuRequest) -> EmuResponse:
        with self._lock:
            self.requests[request.path] += 1
        if request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        if request.path.startswith("/audio/") and self.audio_root:
            return self._serve_audio(request.path)
        if self.latency:
            time.sleep(self.latency)
        for route in self.routes:
            if route.matches(request):
                response = route.handle(request, self)
                response.headers.setdefault(EMULATOR_HEADER, "1")
                return response
        return EmuResponse.json({"error": f"emulator: no provider route for {request.method} {request.path}"}, 404)

    def _serve_audio(self, path: str) -> EmuResponse:
        relative = urllib.parse.unquote(path[len("/audio/") :])
        target = (self.audio_root / relative).resolve()
        if self.audio_root.resolve() not in target.parents or not target.is_file():
            return EmuResponse(404, b"not found")
        return EmuResponse(200, target.read_bytes(), {"Content-Type": "application/octet-stream"})

    def _control(self, request: EmuRequest) -> EmuResponse:
        if request.path == CONTROL_PREFIX:
            return EmuResponse.json(
                {
                    "emulator": True,
                    "note": "mooer's protocol emulator on loopback: NOT a real ASR/MT provider; its labels are not real",
                    "routes": sorted({r.provider for r in self.routes}),
                    "faults": self.faults.rates,
                }
            )
        if request.path == CONTROL_PREFIX + "/billing":
            return EmuResponse.json(self.billing.snapshot())
        if request.path == CONTROL_PREFIX + "/faults" and request.method == "POST":
            spec = request.json()
            self.faults = FaultPlan({k: float(v) for k, v in spec.get("rates", {}).items()}, int(spec.get("seed", 0)))
            return EmuResponse.json({"ok": True})
        return EmuResponse.json({"error": "unknown control endpoint"}, 404)

    # -- serving -------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        handler = _make_handler(self)
        ThreadingHTTPServer.request_queue_size = 128  # the default backlog of 5 refuses bursts
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="mooer-emulator", daemon=True)
        thread.start()
        self.base_url = f"http://{host}:{self._server.server_address[1]}"
        return self.base_url

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "Emulator":
        if not self.base_url:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _make_handler(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mooer-emulator"
        # headers and body leave in one segment: without these, Nagle + delayed ACK add
        # ~40 ms to every keep-alive answer
        disable_nagle_algorithm = True
        wbufsize = 1 << 16

        def log_message(self, format: str, *args) -> None:  # quiet: tests and demo read stdout
            pass

        def _dispatch(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parsed = urllib.parse.urlsplit(self.path)
            request = EmuRequest(
                method=self.command,
                path=parsed.path,
                query=dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            try:
                response = emulator.handle(request)
            except Exception as error:  # a route bug must not look like a provider answer
                response = EmuResponse.json({"error": f"emulator route error: {type(error).__name__}: {error}"}, 599)
            if response.action == "hang":
                time.sleep(emulator.hang_seconds)
                self.close_connection = True
                return
            if response.action == "reset":
                self.close_connection = True
                return
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header(EMULATOR_HEADER, "1")
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)

        do_GET = do_POST = do_PUT = _dispatch

    return Handler


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


RouteFactory = Callable[[], Route]
