#!/usr/bin/python3
"""The real moed daemon (on a Unix socket and, as users of HTTP clients run it, on loopback TCP)
driven by OpenAI's own client library (tests/interop/openai_client.mjs): models, completions
and chat, streamed and not, stop strings, logprobs, a 400 the library turns into its
BadRequestError, answers to a JSON Schema and calls forced to a strict tool's parameters, a
stream the client abandons, and (on DeepSeek-V3, whose template takes them)
a conversation with a tool call and its result, as the library writes them. Afterwards the daemon must still be healthy,
count the disconnect, and exit cleanly on SIGTERM.
Usage: test_openai.py TEST_MODELS_DIR MOED_BINARY"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from common import MODELS, MOED, main, node
MODEL = "tiny-f32"


def get(url):
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, answer.read().decode()


def metric(base, name):
    metrics = get(base + "/metrics")[1]
    lines = [line for line in metrics.splitlines() if line.startswith(name + " ")]
    if len(lines) != 1:
        raise AssertionError("no %s in /metrics:\n%s" % (name, metrics))
    return float(lines[0].split()[1])


class OpenAIClient(unittest.TestCase):
    def test_openai_library(self):
        self.serve(MODEL, [], 17)

    def test_tool_calls_in_the_history(self):
        log = self.serve("tiny-deepseek_v3", ["--tools"], 4)
        # DeepSeek-V3's template renders earlier calls, not the tools list: the daemon says so.
        self.assertIn("does not render `tools`", log)

    def test_tool_choice(self):
        # Qwen3's chat template renders the tools into the prompt.
        log = self.serve("tiny-qwen3_moe", ["--tool-choice"], 4)
        self.assertNotIn("does not render `tools`", log)

    def serve(self, model, flags, checks):
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "daemon.log"), "w+") as log:
                self.run_against(tmp, log, model, flags, checks)
            with open(os.path.join(tmp, "daemon.log")) as log:
                return log.read()

    def run_against(self, tmp, log, model, flags, checks):
        # Port 0: the kernel picks a free port, which the daemon's first line names.
        daemon = subprocess.Popen(
            [MOED, "--model", os.path.join(MODELS, model), "--socket",
             os.path.join(tmp, "moed.sock"), "--tcp", "127.0.0.1:0", "--threads", "1",
             "--state-dir", os.path.join(tmp, "state")], stderr=log)
        try:
            base = None
            for _ in range(300):
                if daemon.poll() is not None:
                    break
                if base is None:
                    with open(log.name) as lines:
                        found = re.search(r"tcp:(127\.0\.0\.1:\d+)", lines.read())
                    base = found and "http://" + found.group(1)
                try:
                    if base and get(base + "/health")[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            self.assertIsNone(daemon.poll(), "moed exited at start")
            self.assertIsNotNone(base, "moed never named its TCP port")
            tokens_before = metric(base, "moed_generated_tokens_total")
            done = node("openai_client.mjs", base + "/v1", model, *flags)
            self.assertEqual(done.count("ok "), checks, done)
            if not flags:
                # The abandoned stream (3000 tokens asked) is cancelled at the daemon's next step;
                # the other checks ask for about 1,500 tokens at most.
                for _ in range(100):
                    if metric(base, "moed_client_disconnects_total") >= 1:
                        break
                    time.sleep(0.1)
                self.assertGreaterEqual(metric(base, "moed_client_disconnects_total"), 1)
                self.assertLess(metric(base, "moed_generated_tokens_total") - tokens_before, 2500)
            self.assertEqual(get(base + "/health")[0], 200)
            daemon.send_signal(signal.SIGTERM)
            self.assertEqual(daemon.wait(timeout=60), 0)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
            log.seek(0)
            sys.stderr.write(log.read()[-4000:] if daemon.returncode else "")


if __name__ == "__main__":
    main("test_openai.py")
