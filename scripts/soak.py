#!/usr/bin/python3
"""Soak test of the moed daemon: many clients for a long time, RSS held against a stated bound.

Starts the real `moed` on a temporary socket under a host budget and drives it with N client
threads for a duration: streaming and non-streaming /v1/completions and /v1/chat/completions with
random prompt lengths, max_tokens and sampling parameters, clients that hang up mid-stream or
before a non-streamed answer, curl clients killed with SIGKILL mid-request, and malformed
requests that must be answered 4xx. The daemon's RSS (/proc/PID/status) is sampled every second
and must stay within

    bound = budget + fixed overhead

where budget is the daemon's own host budget (GET /admin/cache, re-read every second), which
holds the dense weights, the cached experts and the KV caches (the daemon's accounting of the
three, also from /admin/cache, must stay within it), and the fixed overhead is measured on the
idle loaded daemon plus the stated allowances of overhead_allowances().

Exits 1 on any unexpected error (a 5xx other than 503, a 4xx to a well-formed request, a wrong
status to a malformed one, an error event inside a stream, a connection the driver did not close
that ends early, a timeout), an RSS sample over the bound, sessions left running after the
clients stopped, or a daemon that dies or exits uncleanly. Writes summary.json, rss.csv, rss.png
and moed.log into --out.
"""

import argparse
import collections
import ctypes
import ctypes.util
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

MiB = 1 << 20
# Waiting longer than this for one byte of an answer is a hang, whatever the queue holds: the
# driver keeps at most one request per client in flight, so a queued request waits for at most
# `clients` others.
READ_TIMEOUT_S = 300
WORDS = (
    "the capital of France is Paris a mixture of experts model routes every token to few "
    "memory weights live on the disk host daemon moves them between tiers ahead need once upon "
    "time there was little that wanted be large it read its from solid state drive one layer "
    "after another hello world how are you today fine thank weather London raining again "
    "numbers 0 1 2 3 42 100 2026 code def main return if x == y else").split()
ODD_TEXT = ["héllo wörld", "日本語のテキスト", "emoji 🚀🔥", "tab\tand\nnewline", "\u0001\u0002 ctl",
            "quote \" and \\ backslash", "</s> <s> [INST]"]


class UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the daemon's Unix socket."""

    def __init__(self, path, timeout=READ_TIMEOUT_S):
        super().__init__("moed", timeout=timeout)
        self.socket_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.socket_path)
        self.sock = s


def get_json(sock_path, path, timeout=30):
    conn = UnixConnection(sock_path, timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def get_text(sock_path, path, timeout=30):
    conn = UnixConnection(sock_path, timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def proc_memory(pid):
    """VmRSS and its parts, in bytes; None when the process is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return out


class ModelShape:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        self.vocab = c["vocab_size"]
        self.hidden = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads", self.heads)
        self.head_dim = c.get("head_dim") or self.hidden // self.heads
        self.ffn = c["intermediate_size"]
        self.experts = c["num_local_experts"]
        self.top_k = c["num_experts_per_tok"]
        self.context = c["max_position_embeddings"]
        self.dtype_bytes = {"float32": 4, "bfloat16": 2, "float16": 2}.get(c.get("torch_dtype"), 4)


def overhead_allowances(shape, cache, max_batch, longest_prompt, cpus):
    """Memory a served request can add over the idle daemon beyond weights and KV, each with
    its reason: sizes derived from the model and the daemon's report, and one stated allowance
    (malloc arenas). The idle measurement may already hold part of each, which only loosens the
    bound."""
    expert_block = cache.get("expert_block_bytes", 0)
    dense_layer = shape.dtype_bytes * shape.hidden * (
        (shape.heads + 2 * shape.kv_heads) * shape.head_dim + shape.heads * shape.head_dim +
        shape.experts)
    embedding = shape.vocab * shape.hidden * shape.dtype_bytes
    # One step's f32 buffers per row (the engine's Workspace, kept between steps): x, h,
    # projected; q and the attention output; the fused qkv; k; one output per routed slot; an
    # expert pass's gathered rows, gate/up, activation and down products. For the longest
    # prompt, plus the logits of a full decode batch; times two for oneDNN's scratchpads and
    # what the list leaves out (v, the logits of the step before).
    q_width = shape.heads * shape.head_dim
    kv_width = shape.kv_heads * shape.head_dim
    per_row = 4 * (3 * shape.hidden + 2 * q_width + (q_width + 2 * kv_width) + kv_width +
                   shape.top_k * shape.hidden + 3 * shape.ffn + 2 * shape.hidden)
    activations = 2 * (longest_prompt * per_row + 4 * max_batch * shape.vocab)
    return {
        # engine.cpp: spare buffers for two experts and two dense layers, refilled on eviction.
        "buffer_pool": 2 * expert_block + 2 * dense_layer,
        # The disk tier's staging arena (its pages are touched as reads land in it).
        "staging_arena": cache.get("disk", {}).get("staging_bytes", 0),
        # Token embeddings are read from the mapped checkpoint: the rows prompts touch count in
        # RSS as file pages, up to the whole table.
        "mapped_embedding": embedding,
        "step_activations": activations,
        # Each connection has its own thread; glibc gives threads up to 8 heap arenas per core,
        # and each keeps the freed buffers of the requests it parsed and answered (bodies up to
        # the 1 MiB max_body, their JSON and token lists): a stated 4 MiB per arena.
        "malloc_arenas": 8 * cpus * 4 * MiB,
    }


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.served = collections.Counter()
        self.tokens = collections.Counter()
        self.disconnects = collections.Counter()
        self.errors = collections.Counter()  # (expected, kind, status, class) -> count
        self.examples = {}

    def ok(self, kind, tokens):
        with self.lock:
            self.served[kind] += 1
            self.tokens[kind] += tokens

    def disconnect(self, what):
        with self.lock:
            self.disconnects[what] += 1

    def error(self, expected, kind, status, message):
        cls = message_class(message)
        key = (expected, kind, status, cls)
        with self.lock:
            self.errors[key] += 1
            self.examples.setdefault(key, message[:300])

    def unexpected(self):
        with self.lock:
            return sum(n for (expected, *_), n in self.errors.items() if not expected)


def message_class(message):
    """The error's message with numbers and quoted values blanked, so one cause counts once."""
    m = re.sub(r"(?<!\w)'[^']*'(?!\w)|\"[^\"]*\"", "'…'", message)
    m = re.sub(r"\d+(\.\d+)?", "N", m)
    return m[:90]


def error_message(status, body):
    try:
        doc = json.loads(body)
        err = doc.get("error", doc)
        return f"{err.get('type', '?')}: {err.get('message', body[:200])}"
    except (ValueError, AttributeError):
        return "error body is not JSON: " + body[:200].decode(errors="replace") if isinstance(
            body, bytes) else "error body is not JSON: " + str(body)[:200]


class Driver:
    def __init__(self, args, shape, sock_path, tally, deadline, daemon_alive):
        self.args = args
        self.daemon_alive = daemon_alive  # once it died, more requests only repeat the news
        self.shape = shape
        self.sock = sock_path
        self.tally = tally
        self.deadline = deadline
        self.in_flight_lock = threading.Lock()
        self.in_flight = 0  # generation requests whose client is still there

    def generations_in_flight(self):
        with self.in_flight_lock:
            return self.in_flight

    # ---- request bodies

    def random_prompt(self, rng):
        r = rng.random()
        # Mostly chat-sized, some paragraphs, a few long documents that take many steps.
        n = rng.randint(1, 32) if r < 0.75 else rng.randint(32, 300) if r < 0.97 else rng.randint(
            300, self.args.longest_prompt)
        if rng.random() < 0.3:  # token ids: exact length, any id of the vocabulary
            return [rng.randrange(self.shape.vocab) for _ in range(n)]
        words = [rng.choice(WORDS) for _ in range(max(1, n // 2))]
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words) + 1), rng.choice(ODD_TEXT))
        return " ".join(words)

    def sampling(self, rng, body):
        body["max_tokens"] = rng.randint(1, 16) if rng.random() < 0.85 else rng.randint(
            16, self.args.longest_completion)
        if rng.random() < 0.3:
            body["temperature"] = 0.0
        elif rng.random() < 0.8:
            body["temperature"] = round(rng.uniform(0.05, 2.0), 3)
        if rng.random() < 0.5:
            body["top_p"] = round(rng.uniform(0.05, 1.0), 3)
        if rng.random() < 0.5:
            body["top_k"] = rng.choice([0, 1, 2, 5, 40, self.shape.vocab])
        if rng.random() < 0.6:
            body["seed"] = rng.randint(-2**40, 2**40)
        if rng.random() < 0.3:
            stops = [rng.choice(WORDS + ["\n", ".", " t"]) for _ in range(rng.randint(1, 4))]
            body["stop"] = stops[0] if len(stops) == 1 and rng.random() < 0.5 else stops
        return body

    def completion_body(self, rng, stream):
        body = self.sampling(rng, {"prompt": self.random_prompt(rng), "stream": stream})
        if rng.random() < 0.15:
            body["logprobs"] = rng.randint(0, 5)
        return "/v1/completions", body

    def chat_body(self, rng, stream):
        messages = []
        if rng.random() < 0.4:
            messages.append({"role": "system", "content": " ".join(
                rng.choice(WORDS) for _ in range(rng.randint(1, 20)))})
        # Turns alternate user/assistant and end with the user, as chat templates demand.
        for turn in range(rng.randint(1, 3)):
            if turn:
                messages.append({"role": "assistant", "content": " ".join(
                    rng.choice(WORDS) for _ in range(rng.randint(1, 12)))})
            text = self.random_prompt(rng)
            if isinstance(text, list):
                text = " ".join(rng.choice(WORDS) for _ in range(len(text) // 2 + 1))
            messages.append({"role": "user", "content": text})
        body = self.sampling(rng, {"messages": messages, "stream": stream})
        if rng.random() < 0.15:
            body["logprobs"] = True
            body["top_logprobs"] = rng.randint(0, 5)
        return "/v1/chat/completions", body

    # ---- one client's loop

    def run_client(self, index):
        rng = random.Random(self.args.seed * 1000 + index)
        actions = [(self.plain, 24), (self.stream, 30), (self.cancel_stream, 10),
                   (self.abandon, 4), (self.kill_client, 8), (self.malformed, 10)]
        fns, weights = zip(*actions)
        while time.monotonic() < self.deadline and self.daemon_alive():
            action = rng.choices(fns, weights)[0]
            generates = action != self.malformed
            if generates:  # from before connecting until the answer ends or the client leaves
                with self.in_flight_lock:
                    self.in_flight += 1
            try:
                action(rng)
            except Exception as e:  # a driver bug must show in the result, not end the client
                self.tally.error(False, "driver " + action.__name__, -1,
                                 f"{type(e).__name__}: {e}")
            finally:
                if generates:
                    with self.in_flight_lock:
                        self.in_flight -= 1

    def post(self, path, body):
        """Sends the request; returns (connection, response, raw socket). A streamed answer
        closes the connection object, so the socket is kept for hanging up."""
        conn = UnixConnection(self.sock)
        payload = json.dumps(body).encode()
        conn.request("POST", path, payload, {"Content-Type": "application/json"})
        raw = conn.sock
        return conn, conn.getresponse(), raw

    def fail_status(self, kind, status, raw):
        # 503 is the daemon saying "later" (full queue, memory); anything else to a well-formed
        # request is a defect.
        self.tally.error(status == 503, kind, status, error_message(status, raw))

    def plain(self, rng):
        path, body = (self.completion_body if rng.random() < 0.6 else self.chat_body)(rng, False)
        kind = ("chat" if "chat" in path else "completion")
        try:
            conn, r, _ = self.post(path, body)
            raw = r.read()
            conn.close()
        except (OSError, http.client.HTTPException) as e:
            return self.tally.error(False, kind, 0, f"connection: {type(e).__name__}: {e}")
        if r.status != 200:
            return self.fail_status(kind, r.status, raw)
        try:
            doc = json.loads(raw)
            choice = doc["choices"][0]
            used = doc["usage"]["completion_tokens"]
            text = choice["message"]["content"] if kind == "chat" else choice["text"]
            assert isinstance(text, str)
            assert 1 <= used <= body["max_tokens"], f"completion_tokens {used}"
            assert choice["finish_reason"] in ("stop", "length"), choice["finish_reason"]
        except (ValueError, KeyError, TypeError, AssertionError) as e:
            return self.tally.error(False, kind, 200, f"malformed answer: {e!r}")
        self.tally.ok(kind, used)

    def read_events(self, r, limit=None):
        """Reads SSE events; returns (events, error_event, done). Stops after `limit` events."""
        events, error = 0, None
        while limit is None or events < limit:
            line = r.readline()
            if not line:
                return events, error, False
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                return events, error, True
            chunk = json.loads(data)
            if "error" in chunk:
                error = chunk["error"]
            else:
                events += 1
        return events, error, False

    def stream(self, rng):
        path, body = (self.completion_body if rng.random() < 0.5 else self.chat_body)(rng, True)
        kind = ("chat" if "chat" in path else "completion") + "-stream"
        try:
            conn, r, _ = self.post(path, body)
            if r.status != 200:
                return self.fail_status(kind, r.status, r.read())
            events, error, done = self.read_events(r)
            conn.close()
        except (OSError, http.client.HTTPException, ValueError) as e:
            return self.tally.error(False, kind, 0, f"connection: {type(e).__name__}: {e}")
        if error is not None:
            expected = error.get("type") == "server_overloaded"
            return self.tally.error(expected, kind, 200,
                                    f"error event: {error.get('type')}: {error.get('message')}")
        if not done:
            return self.tally.error(False, kind, 200, "stream ended without data: [DONE]")
        self.tally.ok(kind, events)

    def cancel_stream(self, rng):
        path, body = (self.completion_body if rng.random() < 0.5 else self.chat_body)(rng, True)
        body["max_tokens"] = max(body["max_tokens"], 8)
        kind = ("chat" if "chat" in path else "completion") + "-stream"
        try:
            conn, r, raw = self.post(path, body)
            if r.status != 200:
                return self.fail_status(kind, r.status, r.read())
            _, error, done = self.read_events(r, rng.randint(1, 4))
            raw.shutdown(socket.SHUT_RDWR)  # hang up without reading the rest
            r.close()
            conn.close()
        except (OSError, http.client.HTTPException, ValueError) as e:
            return self.tally.error(False, kind, 0, f"connection: {type(e).__name__}: {e}")
        if error is not None:
            return self.tally.error(error.get("type") == "server_overloaded", kind, 200,
                                    f"error event: {error.get('type')}: {error.get('message')}")
        self.tally.disconnect("finished before the hang-up" if done else "cancelled mid-stream")

    def abandon(self, rng):
        """A non-streaming request whose client hangs up before the answer."""
        path, body = self.completion_body(rng, False)
        body["max_tokens"] = rng.randint(8, self.args.longest_completion)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.sock)
            payload = json.dumps(body).encode()
            s.sendall(b"POST %s HTTP/1.1\r\nHost: moed\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(payload), payload))
            ready, _, _ = select.select([s], [], [], rng.uniform(0.05, 1.5))
        except OSError as e:
            return self.tally.error(False, "completion", 0, f"connection: {e}")
        finally:
            s.close()
        self.tally.disconnect("non-streaming answered before the hang-up"
                              if ready else "non-streaming abandoned before the answer")

    def kill_client(self, rng):
        """A separate client process (curl) killed with SIGKILL while its request runs."""
        stream = rng.random() < 0.6
        path, body = (self.completion_body if rng.random() < 0.6 else self.chat_body)(rng, stream)
        body["max_tokens"] = max(body["max_tokens"], 8)
        proc = subprocess.Popen(
            ["curl", "-sS", "-N", "--unix-socket", self.sock, "-H",
             "Content-Type: application/json", "--data-binary", "@-", "http://moed" + path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        proc.stdin.write(json.dumps(body).encode())
        proc.stdin.close()
        if stream:  # killed after its first event arrived
            ready, _, _ = select.select([proc.stdout], [], [], READ_TIMEOUT_S)
            if ready:
                os.read(proc.stdout.fileno(), 1)
            else:
                self.tally.error(False, "curl " + path, 0,
                                 f"no byte of the stream within {READ_TIMEOUT_S} s")
        else:
            try:
                proc.wait(timeout=rng.uniform(0.05, 1.5))
            except subprocess.TimeoutExpired:
                pass
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        self.tally.disconnect("curl finished before SIGKILL" if finished else
                              ("curl killed mid-stream" if stream else "curl killed mid-request"))

    # ---- malformed requests: each must be answered with its status and a JSON error body

    def malformed_cases(self, rng):
        v = self.shape.vocab
        j = lambda body: json.dumps(body).encode()  # noqa: E731
        return [
            ("POST", "/v1/completions", b"{\"prompt\": \"hi\", ", 400),
            ("POST", "/v1/completions", b"[1, 2, 3]", 400),
            ("POST", "/v1/completions", j({"max_tokens": 4}), 400),
            ("POST", "/v1/completions", j({"prompt": "hi", "temperature": 7}), 400),
            ("POST", "/v1/completions", j({"prompt": "hi", "top_p": -0.5}), 400),
            ("POST", "/v1/completions", j({"prompt": "hi", "max_tokens": 0}), 400),
            ("POST", "/v1/completions", j({"prompt": "hi", "max_tokens": "ten"}), 400),
            ("POST", "/v1/completions", j({"prompt": [1, v + rng.randint(0, 99)]}), 400),
            ("POST", "/v1/completions", j({"prompt": "hi", "stop": [1, 2]}), 400),
            ("POST", "/v1/completions", j({"prompt": "hi", "stop": ""}), 400),
            ("POST", "/v1/completions", j({"prompt": "hi", "n": 3}), 400),
            ("POST", "/v1/completions",
             j({"prompt": "hi", "max_tokens": self.shape.context + 1}), 400),
            ("POST", "/v1/completions", j({"prompt": "hi", "model": "no-such-model"}), 404),
            ("POST", "/v1/chat/completions", j({"messages": []}), 400),
            ("POST", "/v1/chat/completions", j({"messages": [{"content": "x"}]}), 400),
            # The template's raise_exception(): roles must alternate.
            ("POST", "/v1/chat/completions",
             j({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}),
             400),
            ("POST", "/v1/chat/completions",
             j({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), 400),
            ("POST", "/v1/chat/completions",
             j({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}), 400),
            ("GET", "/v1/completions", b"", 405),
            ("POST", "/v1/no-such-route", j({}), 404),
            ("POST", "/v1/completions", b"x" * (2 * MiB), 413),
        ]

    def malformed(self, rng):
        method, path, payload, want = rng.choice(self.malformed_cases(rng))
        kind = "malformed " + method + " " + path
        try:
            conn = UnixConnection(self.sock)
            conn.request(method, path, payload, {"Content-Type": "application/json"})
            r = conn.getresponse()
            raw = r.read()
            conn.close()
        except (OSError, http.client.HTTPException) as e:
            # The server may answer 413 and close while the 2 MiB are still being sent; the
            # reset then leaves no answer to read.
            if want == 413 and isinstance(e, (BrokenPipeError, ConnectionResetError)):
                return self.tally.error(True, kind, 0, "reset while sending an oversized body")
            return self.tally.error(False, kind, 0, f"connection: {type(e).__name__}: {e}")
        message = error_message(r.status, raw)
        valid_json = not message.startswith("error body is not JSON")
        self.tally.error(r.status == want and valid_json, kind, r.status,
                         message if r.status == want else f"wanted {want}: {message}")

    def raw_garbage(self):
        """Bytes that are not HTTP: the server must answer 400 (or close) and keep serving."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(READ_TIMEOUT_S)
        try:
            s.connect(self.sock)
            s.sendall(b"\x16\x03\x01 GARBAGE \x01\x02\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        except OSError as e:
            return self.tally.error(False, "malformed raw bytes", 0, f"connection: {e}")
        finally:
            s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else 0
        message = error_message(status, body)
        self.tally.error(status == 400 and not message.startswith("error body is not JSON"),
                         "malformed raw bytes", status, message)


class Sampler(threading.Thread):
    """Samples RSS and the daemon's budget every second and checks them against the bound."""

    def __init__(self, daemon, sock, bound_of, in_flight):
        super().__init__(daemon=True)
        self.proc = daemon
        self.sock = sock
        self.bound_of = bound_of
        self.in_flight = in_flight
        self.samples = []
        self.stop_event = threading.Event()
        self.start_time = time.monotonic()

    def sample(self):
        mem = proc_memory(self.proc.pid)
        if mem is None or self.proc.poll() is not None:
            return None
        try:
            _, cache = get_json(self.sock, "/admin/cache", timeout=READ_TIMEOUT_S)
        except (OSError, http.client.HTTPException, ValueError):
            cache = None
        s = {"t": time.monotonic() - self.start_time, **mem}
        # Sessions the daemon runs or queues beyond the requests whose clients are still there
        # belong to clients that left. The driver's count is taken on both sides of the read and
        # the larger used, so a request sent meanwhile is not counted as left.
        before = self.in_flight()
        try:
            text = get_text(self.sock, "/metrics", timeout=READ_TIMEOUT_S)[1]
            held = (metric(text, "moed_active_sessions") or 0) + (
                metric(text, "moed_queue_length") or 0)
            s["clientless"] = max(0, int(held) - max(before, self.in_flight()))
        except (OSError, http.client.HTTPException):
            s["clientless"] = 0
        if cache:
            s["budget"] = cache["host"]["budget_bytes"]
            s["fixed"] = cache["host"]["fixed_bytes"]
            s["experts_used"] = cache["host"]["used_bytes"]
            s["kv"] = cache["kv"]["bytes"]
        elif self.samples:
            for key in ("budget", "fixed", "experts_used", "kv"):
                s[key] = self.samples[-1][key]
        else:
            return s
        s["bound"] = self.bound_of(s)
        return s

    def run(self):
        while not self.stop_event.is_set():
            s = self.sample()
            if s is None:
                return
            if "bound" in s:
                self.samples.append(s)
            self.stop_event.wait(1.0)


def write_png(path, samples, title, markers):
    """RSS, its anonymous part and the bound against time, drawn with libgd (the library moectl
    plots with) through ctypes, so the soak needs no plotting package."""
    gd = ctypes.CDLL(ctypes.util.find_library("gd") or "libgd.so.3")
    gd.gdImageCreateTrueColor.restype = ctypes.c_void_p
    gd.gdFontGetSmall.restype = ctypes.c_void_p
    gd.gdFontGetMediumBold.restype = ctypes.c_void_p
    gd.gdImagePngPtr.restype = ctypes.c_void_p
    for fn in ("gdImageLine", "gdImageFilledRectangle", "gdImageString", "gdImageSetThickness",
               "gdImageDestroy", "gdFree", "gdImagePngPtr"):
        getattr(gd, fn).argtypes = None
    width, height, left, right, top, bottom = 1000, 560, 80, 220, 50, 60
    im = ctypes.c_void_p(gd.gdImageCreateTrueColor(width, height))
    rgb = lambda r, g, b: (r << 16) | (g << 8) | b  # noqa: E731  gdTrueColor
    white, black, grid = rgb(255, 255, 255), rgb(0, 0, 0), rgb(225, 225, 225)
    small = ctypes.c_void_p(gd.gdFontGetSmall())
    bold = ctypes.c_void_p(gd.gdFontGetMediumBold())

    def text(x, y, s, color, font=small):
        gd.gdImageString(im, font, int(x), int(y), ctypes.c_char_p(s.encode()), color)

    gd.gdImageFilledRectangle(im, 0, 0, width - 1, height - 1, white)
    series = [("bound = budget + overhead", rgb(214, 39, 40), [s["bound"] for s in samples]),
              ("RSS (VmRSS)", rgb(31, 119, 180), [s["VmRSS"] for s in samples]),
              ("RssAnon", rgb(44, 160, 44), [s.get("RssAnon", 0) for s in samples]),
              ("budget", rgb(148, 103, 189), [s["budget"] for s in samples]),
              ("weights + KV", rgb(255, 127, 14),
               [s["fixed"] + s["experts_used"] + s["kv"] for s in samples])]
    ts = [s["t"] for s in samples]
    t_min, t_max = (ts[0], ts[-1]) if len(ts) > 1 else (0, 1)
    if t_max <= t_min:
        t_max = t_min + 1
    y_max = max(max(v) for _, _, v in series) / MiB * 1.1
    step = next(s for s in (50, 100, 200, 250, 500, 1000, 2000, 5000, 10000, 1e9)
                if y_max / s <= 8)
    y_max = step * -(-y_max // step)
    plot_w, plot_h = width - left - right, height - top - bottom
    px = lambda t: left + int((t - t_min) / (t_max - t_min) * plot_w)  # noqa: E731
    py = lambda b: top + plot_h - int(b / MiB / y_max * plot_h)  # noqa: E731
    v = 0
    while v <= y_max:
        y = py(v * MiB)
        gd.gdImageLine(im, left, y, left + plot_w, y, grid)
        text(left - 8 - 6 * len(f"{v:g}"), y - 6, f"{v:g}", black)
        v += step
    t_step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1e9)
                  if (t_max - t_min) / s <= 12)
    t = 0
    while t <= t_max:
        if t >= t_min:
            x = px(t)
            gd.gdImageLine(im, x, top, x, top + plot_h, grid)
            text(x - 3 * len(f"{t:g}"), top + plot_h + 6, f"{t:g}", black)
        t += t_step
    gd.gdImageLine(im, left, top + plot_h, left + plot_w, top + plot_h, black)
    gd.gdImageLine(im, left, top, left, top + plot_h, black)
    text(left + plot_w // 2 - 80, height - 24, "time since the load started (s)", black)
    text(8, top - 20, "MiB", black)
    text(left, 14, title, black, bold)
    for i, (t, label) in enumerate(markers):  # dashed vertical lines
        if t_min <= t <= t_max:
            for y in range(top, top + plot_h, 8):
                gd.gdImageLine(im, px(t), y, px(t), y + 3, black)
            near_right = px(t) + 6 * len(label) + 4 > left + plot_w
            text(px(t) - 6 * len(label) - 4 if near_right else px(t) + 4, top + 4 + 14 * i,
                 label, black)
    gd.gdImageSetThickness(im, 2)
    for i, (name, color, values) in enumerate(series):
        for a in range(1, len(values)):
            gd.gdImageLine(im, px(ts[a - 1]), py(values[a - 1]), px(ts[a]), py(values[a]), color)
        y = top + 10 + 20 * i
        gd.gdImageLine(im, left + plot_w + 15, y + 6, left + plot_w + 40, y + 6, color)
        text(left + plot_w + 46, y, name, black)
    size = ctypes.c_int(0)
    data = ctypes.c_void_p(gd.gdImagePngPtr(im, ctypes.byref(size)))
    if not data:
        raise RuntimeError(f"libgd could not encode {path}")
    with open(path, "wb") as f:
        f.write(ctypes.string_at(data, size.value))
    gd.gdFree(data)
    gd.gdImageDestroy(im)


def wait_until(predicate, timeout_s, poll_s=0.5):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--moed", required=True, help="the moed binary")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--host-budget", default="25%", help="moed --host-budget (default 25%%)")
    p.add_argument("--max-batch", type=int, default=16, help="moed --max-batch (default 16)")
    p.add_argument("--longest-prompt", type=int, default=1000,
                   help="longest prompt in tokens (or words/2) the driver sends (default 1000)")
    p.add_argument("--longest-completion", type=int, default=96,
                   help="largest max_tokens the driver asks for (default 96)")
    p.add_argument("--seed", type=int, default=1, help="seed of the driver's choices")
    p.add_argument("--out", required=True, help="directory for the summary, RSS curve and log")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    shape = ModelShape(args.model)
    failures = []

    workdir = tempfile.mkdtemp(prefix="moed-soak-")
    sock = os.path.join(workdir, "moed.sock")
    log = open(os.path.join(args.out, "moed.log"), "wb")
    daemon = subprocess.Popen(
        [args.moed, "--model", args.model, "--socket", sock, "--host-budget", args.host_budget,
         "--max-batch", str(args.max_batch), "--state-dir", workdir],
        stdout=log, stderr=subprocess.STDOUT)

    def healthy():
        if daemon.poll() is not None:
            raise SystemExit(f"soak: moed exited with {daemon.returncode} while loading; see "
                             f"{args.out}/moed.log")
        try:
            return get_json(sock, "/health")[0] == 200
        except (OSError, http.client.HTTPException, ValueError):
            return False

    if not wait_until(healthy, 600):
        daemon.kill()
        raise SystemExit("soak: moed did not become healthy within 600 s")

    # Idle overhead: RSS of the loaded, idle daemon minus the weights it holds resident.
    idle_rss = []
    for _ in range(3):
        idle_rss.append(proc_memory(daemon.pid)["VmRSS"])
        time.sleep(1)
    _, cache = get_json(sock, "/admin/cache")
    idle = min(idle_rss)
    resident_weights = cache["host"]["fixed_bytes"] + cache["host"]["used_bytes"]
    idle_overhead = max(0, idle - resident_weights)
    longest_prompt_tokens = args.longest_prompt + 64  # chat templates add their own tokens
    allowances = overhead_allowances(shape, cache, args.max_batch, longest_prompt_tokens,
                                     os.cpu_count() or 1)
    overhead = idle_overhead + sum(allowances.values())

    def bound_of(s):
        return s["budget"] + overhead

    tally = Tally()
    driver = Driver(args, shape, sock, tally, time.monotonic() + args.duration,
                    lambda: daemon.poll() is None)
    sampler = Sampler(daemon, sock, bound_of, driver.generations_in_flight)
    sampler.start()
    start = time.monotonic()
    driver.deadline = start + args.duration
    clients = [threading.Thread(target=driver.run_client, args=(i,), daemon=True)
               for i in range(args.clients)]
    for c in clients:
        c.start()
    # Bytes that are not HTTP, every 30 s, from the main thread.
    while time.monotonic() < start + args.duration and daemon.poll() is None:
        driver.raw_garbage()
        time.sleep(max(0.0, min(30.0, start + args.duration - time.monotonic())))
    stragglers = time.monotonic() + READ_TIMEOUT_S
    for c in clients:
        c.join(timeout=max(0.0, stragglers - time.monotonic()))
    if any(c.is_alive() for c in clients):
        failures.append(f"clients still waiting {READ_TIMEOUT_S} s after the end")
    load_s = time.monotonic() - start
    # Every client has stopped: whatever the daemon still runs or queues has no client left.
    try:
        orphans_text = get_text(sock, "/metrics")[1]
        orphans = int((metric(orphans_text, "moed_active_sessions") or 0) +
                      (metric(orphans_text, "moed_queue_length") or 0))
    except (OSError, http.client.HTTPException):
        orphans = None

    # Sessions whose clients left must end: nothing may stay in the batch or queue.
    def idle_again():
        if daemon.poll() is not None:
            return True
        try:
            _, text = get_text(sock, "/metrics")
        except (OSError, http.client.HTTPException):
            return False
        return metric(text, "moed_active_sessions") == 0 and metric(text, "moed_queue_length") == 0

    settled = wait_until(idle_again, READ_TIMEOUT_S)
    settle_s = time.monotonic() - start - load_s
    metrics_text = ""
    if daemon.poll() is None:
        try:
            metrics_text = get_text(sock, "/metrics")[1]
        except (OSError, http.client.HTTPException):
            pass
    sampler.stop_event.set()
    sampler.join()
    if daemon.poll() is not None:
        failures.append(f"moed died during the soak (status {daemon.returncode})")
    elif not settled:
        failures.append(f"sessions still active or queued {READ_TIMEOUT_S} s after the clients "
                        "stopped")

    daemon.send_signal(signal.SIGTERM)
    try:
        code = daemon.wait(timeout=120)
        if code != 0 and not any(f.startswith("moed died") for f in failures):
            failures.append(f"moed exited with status {code} after SIGTERM")
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
        failures.append("moed did not exit within 120 s of SIGTERM")
    log.close()
    shutil.rmtree(workdir, ignore_errors=True)

    samples = sampler.samples
    over = [s for s in samples if s["VmRSS"] > s["bound"]]
    if over:
        worst = max(over, key=lambda s: s["VmRSS"] - s["bound"])
        failures.append(f"RSS over the bound in {len(over)} of {len(samples)} samples; worst at "
                        f"t={worst['t']:.0f} s: {worst['VmRSS'] / MiB:.0f} MiB > "
                        f"{worst['bound'] / MiB:.0f} MiB")
    over_budget = [s for s in samples if s["fixed"] + s["experts_used"] + s["kv"] > s["budget"]]
    if over_budget:
        failures.append(f"the daemon's own accounting (weights + KV) exceeded its budget in "
                        f"{len(over_budget)} samples")
    if not samples:
        failures.append("no RSS sample was taken")
    # The kernel's high-water mark catches a peak between two samples.
    peak_hwm = max((s.get("VmHWM", 0) for s in samples), default=0)
    if samples and peak_hwm > max(s["bound"] for s in samples):
        failures.append(f"peak RSS (VmHWM) {peak_hwm / MiB:.0f} MiB exceeds the largest bound "
                        f"{max(s['bound'] for s in samples) / MiB:.0f} MiB")
    unexpected = tally.unexpected()
    if unexpected:
        failures.append(f"{unexpected} unexpected errors")

    # ---- report
    csv_path = os.path.join(args.out, "rss.csv")
    with open(csv_path, "w") as f:
        f.write("t_s,vm_rss,rss_anon,rss_file,budget,fixed,experts_used,kv,bound,"
                "clientless_sessions\n")
        for s in samples:
            f.write(f"{s['t']:.1f},{s['VmRSS']},{s.get('RssAnon', 0)},{s.get('RssFile', 0)},"
                    f"{s['budget']},{s['fixed']},{s['experts_used']},"
                    f"{s['kv']},{s['bound']},"
                    f"{s['clientless']}\n")
    png_path = os.path.join(args.out, "rss.png")
    if samples:
        write_png(png_path, samples, f"moed soak: {args.clients} clients, "
                  f"{args.host_budget} host budget, {os.path.basename(args.model.rstrip('/'))}",
                  [(args.duration, "no new requests"), (load_s, "last client done")])

    mib = lambda b: f"{b / MiB:,.0f} MiB"  # noqa: E731
    lines = [f"soak: {load_s:.0f} s of load ({args.duration:.0f} s asked), {args.clients} clients, "
             f"host budget {args.host_budget}, model {args.model}"]
    clientless = max(samples, key=lambda s: s["clientless"], default=None)
    lines.append("sessions whose clients had left (the daemon's running + queued beyond the "
                 "driver's requests in flight): " + (
                     f"at most {clientless['clientless']} at t={clientless['t']:.0f} s, "
                     f"{sum(s['clientless'] for s in samples)} session-seconds; "
                     if clientless else "") +
                 f"{'?' if orphans is None else orphans} when the last client was done, all "
                 f"ended {settle_s:.0f} s later")
    lines.append("requests served (complete, checked answers):")
    for kind in sorted(tally.served):
        lines.append(f"  {kind:<20} {tally.served[kind]:>6}   ({tally.tokens[kind]} tokens)")
    lines.append(f"  {'total':<20} {sum(tally.served.values()):>6}")
    lines.append("disconnects the driver caused:")
    for what in sorted(tally.disconnects):
        lines.append(f"  {what:<44} {tally.disconnects[what]:>6}")
    lines.append("errors by kind (status 0: no HTTP answer):")
    for (expected, kind, status, cls), n in sorted(tally.errors.items(), key=lambda kv: (
            kv[0][0], kv[0][1], kv[0][2])):
        lines.append(f"  {'expected  ' if expected else 'UNEXPECTED'} {status:>3} {kind:<36} "
                     f"{n:>5}  {cls}")
        if not expected:
            lines.append(f"{'':17}e.g. {tally.examples[(expected, kind, status, cls)]}")
    if metrics_text:
        lines.append("daemon counters: " + ", ".join(
            f"{name}={metric(metrics_text, 'moed_' + name):g}"
            for name in ("http_requests_total", "http_errors_total", "generated_tokens_total",
                         "prompt_tokens_total", "host_hit_ratio", "disk_read_errors_total")
            if metric(metrics_text, "moed_" + name) is not None))
    first = samples[0] if samples else {}
    lines.append("RSS bound = budget + fixed overhead:")
    lines.append(f"  budget (daemon's /admin/cache host.budget_bytes) {mib(first.get('budget', 0))}"
                 f" = fixed weights {mib(first.get('fixed', 0))} + experts + KV caches (peak KV "
                 f"{mib(max((s['kv'] for s in samples), default=0))})")
    lines.append(f"  fixed overhead {mib(overhead)} = idle {mib(idle_overhead)} (RSS {mib(idle)} "
                 f"of the loaded idle daemon - {mib(resident_weights)} resident weights) + " +
                 " + ".join(f"{k} {mib(v)}" for k, v in allowances.items()))
    if samples:
        peak = max(samples, key=lambda s: s["VmRSS"])
        tight = min(samples, key=lambda s: s["bound"] - s["VmRSS"])
        lines.append(f"RSS: {len(samples)} samples; idle {mib(idle)}, peak {mib(peak['VmRSS'])} "
                     f"at t={peak['t']:.0f} s (anon {mib(peak.get('RssAnon', 0))}, file "
                     f"{mib(peak.get('RssFile', 0))}), high-water mark {mib(peak_hwm)}, "
                     f"last {mib(samples[-1]['VmRSS'])}; "
                     f"closest to the bound: {mib(tight['VmRSS'])} of {mib(tight['bound'])} "
                     f"at t={tight['t']:.0f} s")
        lines.append(f"RSS curve: {png_path} (samples: {csv_path})")
    lines.append("result: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    print("\n".join(lines))
    summary = {
        "duration_s": load_s, "clients": args.clients, "orphaned_sessions": orphans,
        "orphans_settled_s": settle_s,
        "clientless_session_seconds": sum(s["clientless"] for s in samples), "host_budget": args.host_budget,
        "served": dict(tally.served), "tokens": dict(tally.tokens),
        "disconnects": dict(tally.disconnects),
        "errors": [{"expected": e, "kind": k, "status": st, "class": c, "count": n,
                    "example": tally.examples[(e, k, st, c)]}
                   for (e, k, st, c), n in tally.errors.items()],
        "bound": {"idle_rss": idle, "resident_weights_idle": resident_weights,
                  "idle_overhead": idle_overhead, "allowances": allowances,
                  "overhead": overhead},
        "peak_rss": max((s["VmRSS"] for s in samples), default=0), "peak_hwm": peak_hwm,
        "failures": failures,
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
