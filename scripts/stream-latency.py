#!/usr/bin/python3
"""Inter-token latency of streaming clients while a long prompt arrives.

Against a running moed (Unix socket): N clients stream completions; once every one of them has
its first tokens, one more client sends a long prompt (token ids, max_tokens 1). Prints the
gaps between consecutive tokens of the streaming clients, over the time from the long prompt's
arrival to its answer: p50, p99 and max, and the same for the whole run.

  scripts/stream-latency.py --socket /tmp/moed.sock --clients 4 --prompt-tokens 2000
"""
import argparse
import json
import socket
import threading
import time


def request(sock_path, body):
    """Sends a POST /v1/completions and returns the connected socket's file for the response."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: moed\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(data)).encode() + b"\r\nConnection: close\r\n\r\n" + data)
    return s, s.makefile("rb")


def stream_client(sock_path, max_tokens, prompt, stamps, started):
    s, f = request(sock_path, {"prompt": prompt, "max_tokens": max_tokens, "stream": True,
                               "temperature": 0})
    status = f.readline()
    if b" 200 " not in status:
        raise SystemExit("stream request failed: %r" % status)
    first = True
    for line in f:
        if not line.startswith(b"data: "):
            continue
        if line.strip() == b"data: [DONE]":
            break
        stamps.append(time.monotonic())
        if first:
            started.release()
            first = False
    s.close()


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def summary(gaps):
    ms = [g * 1000 for g in gaps]
    return "p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (%d gaps)" % (
        percentile(ms, 50), percentile(ms, 99), max(ms) if ms else float("nan"), len(ms))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--socket", required=True)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=2000)
    ap.add_argument("--stream-tokens", type=int, default=400,
                    help="tokens each streaming client asks for (enough to outlast the prefill)")
    ap.add_argument("--vocab", type=int, default=32000)
    args = ap.parse_args()

    started = threading.Semaphore(0)
    stamps = [[] for _ in range(args.clients)]
    threads = [threading.Thread(target=stream_client,
                                args=(args.socket, args.stream_tokens, "Client %d says" % i,
                                      stamps[i], started))
               for i in range(args.clients)]
    for t in threads:
        t.start()
    for _ in threads:
        started.acquire()
    time.sleep(0.5)  # let the streams settle into steady decoding before the long prompt

    long_prompt = [1 + (i * 7919) % (args.vocab - 1) for i in range(args.prompt_tokens)]
    arrived = time.monotonic()
    s, f = request(args.socket, {"prompt": long_prompt, "max_tokens": 1, "temperature": 0})
    reply = f.read()
    answered = time.monotonic()
    s.close()
    if b" 200 " not in reply.split(b"\r\n", 1)[0]:
        raise SystemExit("long prompt failed: %r" % reply[:300])
    for t in threads:
        t.join()

    during, overall = [], []
    for client in stamps:
        for a, b in zip(client, client[1:]):
            overall.append(b - a)
            if b >= arrived and a <= answered:
                during.append(b - a)
    print("long prompt: %d tokens answered in %.2f s" % (args.prompt_tokens, answered - arrived))
    print("while it was prefilled: " + summary(during))
    print("whole run:              " + summary(overall))


if __name__ == "__main__":
    main()
