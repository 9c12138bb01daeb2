#!/usr/bin/env bash
# End-to-end tests of the real moed daemon on a temporary socket with the tiny model, through
# curl --unix-socket: the OpenAI routes (completions and chat), streaming, logprobs, stop strings, seeds, concurrency,
# clients that vanish, bad input, admin permissions, metrics, SIGHUP, SIGTERM drain, socket
# activation and the systemd units.
set -uo pipefail
moed=$(realpath "$1") models=$(realpath "$2") configs=$(realpath "$3") moectl=$(realpath "$4") source=$(realpath "$5")
build=$(dirname "$(dirname "$moed")")
work=$(mktemp -d)
chmod 755 "$work"
sock=$work/moed.sock
pid=""
cleanup() { [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null; [[ -n ${MOED_KEEP:-} ]] || rm -rf "$work"; }
trap cleanup EXIT
# keep the work dir on failure for inspection: MOED_KEEP=1
source "$(dirname "$0")/checks.sh"
py() { /usr/bin/python3 -c "$@"; }
api() { curl -s --max-time 30 --unix-socket "$sock" "$@"; }
status_of() { curl -s -o "$work/body" -w '%{http_code}' --max-time 30 --unix-socket "$sock" "$@"; }
# Another daemon on its own socket (NAME.sock, its stderr in NAME.log) that api/expect talk to
# until stop_other.
start_other() {
  local name=$1 model=$2
  shift 2
  "$moed" --model "$model" --socket "$work/$name.sock" "$@" 2>"$work/$name.log" &
  other_pid=$!
  sock_saved=$sock sock=$work/$name.sock
  for _ in $(seq 1 $((100 * slow))); do [[ $(status_of http://moed/health) == 200 ]] && return 0; sleep 0.1; done
  fail "$name never loaded $model; its log:"
  cat "$work/$name.log"
}
stop_other() {
  sock=$sock_saved
  kill -TERM "$other_pid"
  wait "$other_pid" 2>/dev/null
}

cat >"$work/moed.yaml" <<YAML
model:
  path: $models/tiny-f32
listen:
  socket: $sock
  socket_mode: "0666"
  cors_origins: ["http://localhost:3000"]
memory:
  host_budget: 50%
compute:
  threads: 1
limits:
  max_queue: 16
  max_batch: 8
  max_body: 64KiB
  header_timeout_ms: 1000
  send_timeout_ms: 1000
  default_chat_max_tokens: 40
state_dir: $work/state
YAML

# Sanitizer runtimes slow every process's start by design (ThreadSanitizer maps its shadow memory
# and intercepts every allocation), so their builds get a longer bound, and slow scales the bounds
# of the waits for a model to load.
start_limit=1 slow=1
[[ -n ${MOED_SANITIZED:-} ]] && start_limit=5 slow=6
start=$(date +%s.%N)
"$moed" --config "$work/moed.yaml" 2>"$work/daemon.log" &
pid=$!
for _ in $(seq 1 $((start_limit * 100))); do [[ -S $sock ]] && break; sleep 0.01; done
code=$(status_of http://moed/health)
elapsed=$(py "print($(date +%s.%N) - $start)")
[[ $code == 200 || $code == 503 ]] && py "assert $elapsed < $start_limit" && pass "/health answers within $start_limit s ($elapsed s, $code)" || fail "/health at start ($code, $elapsed s)"
for _ in $(seq 1 $((100 * slow))); do [[ $(status_of http://moed/health) == 200 ]] && break; sleep 0.1; done
py "import json; assert json.load(open('$work/body'))['status'] == 'ok'" && pass "model loaded" || { fail "model never loaded"; cat "$work/daemon.log"; exit 1; }
for _ in $(seq 1 $((50 * slow))); do grep -q "^moed: kernels: ." "$work/daemon.log" && break; sleep 0.1; done
grep -q "^moed: kernels: ." "$work/daemon.log" && pass "the log names the kernels once loaded" || { fail "no kernels line"; cat "$work/daemon.log"; }

api http://moed/v1/models | py "import json,sys; d=json.load(sys.stdin); assert d['data'][0]['id'] == 'tiny-f32'" && pass "/v1/models" || fail "/v1/models"
api http://moed/v1/models/tiny-f32 | py "import json,sys; d=json.load(sys.stdin); assert d['id'] == 'tiny-f32' and d['object'] == 'model'" && pass "/v1/models/{model}" || fail "/v1/models/{model}"
# A base URL that ends in a slash: runs of slashes are one, and a slash at the end is dropped.
api http://moed/v1/models/ | py "import json,sys; assert json.load(sys.stdin)['object'] == 'list'" &&
  api 'http://moed/v1//models/tiny-f32?x=1' | py "import json,sys; assert json.load(sys.stdin)['id'] == 'tiny-f32'" &&
  pass "slashes doubled or at the end" || fail "slashes doubled or at the end"
# Date on every answer (RFC 9110, 6.6.1), in IMF-fixdate.
api -D - -o /dev/null http://moed/health | grep -Eq '^[Dd]ate: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT' &&
  pass "Date header" || fail "Date header"
[[ $(status_of http://moed/v1/models/other) == 404 ]] && py "import json; e=json.load(open('$work/body'))['error']; assert e['code'] == 'model_not_found' and 'other' in e['message'], e" && pass "/v1/models/{unknown}: 404 model_not_found" || fail "/v1/models/{unknown}"

req() { echo "{\"prompt\": \"The capital of France is\", \"max_tokens\": $1, \"temperature\": ${2:-0}, \"seed\": ${3:-0}${4:-}}"; }
api http://moed/v1/completions -d "$(req 12)" >"$work/greedy.json"
py "
import json; r = json.load(open('$work/greedy.json'))
c = r['choices'][0]; u = r['usage']
assert r['object'] == 'text_completion' and c['finish_reason'] == 'length' and c['text'], r
assert u['completion_tokens'] == 12 and u['total_tokens'] == u['prompt_tokens'] + 12, u
" && pass "completion with usage" || fail "completion: $(cat "$work/greedy.json")"

api http://moed/v1/completions -d "$(req 16 0.9 7)" >"$work/a.json"
api http://moed/v1/completions -d "$(req 16 0.9 7)" >"$work/b.json"
py "import json; x=json.load(open('$work/a.json')); y=json.load(open('$work/b.json')); assert x['choices'][0]['text'] == y['choices'][0]['text']" && pass "same seed, same text" || fail "seeded completions differ"

api -N http://moed/v1/completions -d "$(req 16 0.9 7 ', "stream": true')" >"$work/stream.txt"
py "
import json
lines = [l for l in open('$work/stream.txt').read().split('\n') if l]
assert lines[-1] == 'data: [DONE]', lines[-1]
chunks = [json.loads(l[6:]) for l in lines[:-1]]
text = ''.join(c['choices'][0]['text'] for c in chunks)
assert text == json.load(open('$work/a.json'))['choices'][0]['text'], text
last = chunks[-1]
assert last['choices'][0]['finish_reason'] in ('length', 'stop') and all('usage' not in c for c in chunks)
" && pass "SSE stream: same text as non-streamed, no usage unasked, [DONE]" || fail "stream"
# response_format json_object: sampled answers that end are JSON objects and nothing else (the
# random tiny model would write anything), and the stream carries the same text.
for seed in 1 2 3 4 5 6; do
  api http://moed/v1/completions -d "$(req 64 1 $seed ', "response_format": {"type": "json_object"}')" >"$work/json-$seed.json"
done
api -N http://moed/v1/completions -d "$(req 64 1 2 ', "response_format": {"type": "json_object"}, "stream": true')" >"$work/json-stream.txt"
py "
import json
ended = 0
for seed in range(1, 7):
    choice = json.load(open('$work/json-%d.json' % seed))['choices'][0]
    if choice['finish_reason'] == 'stop':
        assert isinstance(json.loads(choice['text']), dict), choice
        ended += 1
    else:
        assert choice['finish_reason'] == 'length', choice
assert ended >= 1, 'no answer closed its object within 64 tokens'
lines = [l for l in open('$work/json-stream.txt').read().split('\n') if l]
streamed = ''.join(json.loads(l[6:])['choices'][0]['text'] for l in lines[:-1])
assert streamed == json.load(open('$work/json-2.json'))['choices'][0]['text'], streamed
" && pass "response_format json_object: answers are JSON objects, streamed alike" || fail "response_format json_object"
# response_format json_schema: answers that end are valid against the schema, by an independent
# validator (python3-jsonschema, formats checked), and the stream carries the same text. The
# tiny model writes many blanks: its answers take 150-240 tokens.
schema='{"type": "object", "properties": {"kind": {"enum": ["a", "b", 3]}, "ok": {"type": "boolean"}, "n": {"anyOf": [{"type": "integer"}, {"type": "null"}]}, "tags": {"type": "array", "items": {"type": "string", "maxLength": 2}, "maxItems": 1}, "code": {"type": "string", "pattern": "^[a-z]\\d$"}, "day": {"type": "string", "format": "date"}}, "required": ["kind", "ok", "n", "code", "day"], "additionalProperties": false}'
echo "$schema" >"$work/schema.json"
schema_format='"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "strict": true, "schema": '"$schema"'}}'
for seed in 1 2 3 4 5 6; do
  api http://moed/v1/completions -d "$(req 320 1 $seed ", $schema_format")" >"$work/schema-$seed.json"
done
api -N http://moed/v1/completions -d "$(req 320 1 3 ", $schema_format, \"stream\": true")" >"$work/schema-stream.txt"
py "
import json, jsonschema
validator = jsonschema.Draft202012Validator(json.load(open('$work/schema.json')),
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
ended = 0
for seed in range(1, 7):
    choice = json.load(open('$work/schema-%d.json' % seed))['choices'][0]
    if choice['finish_reason'] == 'stop':
        validator.validate(json.loads(choice['text']))
        ended += 1
    else:
        assert choice['finish_reason'] == 'length', choice
assert ended >= 1, 'no answer ended within 320 tokens'
lines = [l for l in open('$work/schema-stream.txt').read().split('\n') if l]
streamed = ''.join(json.loads(l[6:])['choices'][0]['text'] for l in lines[:-1])
assert streamed == json.load(open('$work/schema-3.json'))['choices'][0]['text'], streamed
" && pass "response_format json_schema: answers are valid instances, streamed alike" || fail "response_format json_schema"
# An HTTP/1.0 client has no chunked coding: its stream is the plain body, ended by the close.
py "
import json, socket
body = json.dumps({'prompt': 'The capital of France is', 'max_tokens': 4, 'temperature': 0, 'stream': True}).encode()
s = socket.socket(socket.AF_UNIX); s.connect('$sock'); s.settimeout(10)
s.sendall(b'POST /v1/completions HTTP/1.0\r\nHost: moed\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n' % len(body) + body)
answer = b''
while chunk := s.recv(65536):
    answer += chunk
head, _, rest = answer.partition(b'\r\n\r\n')
assert head.startswith(b'HTTP/1.0 200') and b'chunked' not in head.lower(), head
events = [e for e in rest.decode().split('\n\n') if e]
assert events[-1] == 'data: [DONE]' and all(e.startswith('data: {') for e in events[:-1]), events
" && pass "HTTP/1.0 stream: plain body, no chunked coding" || fail "HTTP/1.0 stream"
# Tokens after a stop string are neither sent nor counted: the text stops where the stop string
# starts, and the last token counted is the one that completed it. Logprob tokens are their
# text, as OpenAI gives them (a piece of a multi-byte character reads as U+FFFD).
api http://moed/v1/completions -d "$(req 16 0 0 ', "logprobs": 1')" >"$work/nostop.json"
req 16 0 0 ', "logprobs": 1' >"$work/stop-body.json"
py "
import json
full = json.load(open('$work/nostop.json'))['choices'][0]
text = full['text']
at = next(p for p in range(len(text) // 3, len(text) - 1) if text[p:p + 2].isascii() and text[p:p + 2].isalpha())
body = json.load(open('$work/stop-body.json'))
body['stop'] = text[at:at + 2]
json.dump(body, open('$work/stop-body.json', 'w'))
"
api http://moed/v1/completions --data-binary @"$work/stop-body.json" | py "
import json, sys
r = json.load(sys.stdin); c = r['choices'][0]; full = json.load(open('$work/nostop.json'))['choices'][0]
stop = json.load(open('$work/stop-body.json'))['stop']
assert c['finish_reason'] == 'stop' and c['text'] == full['text'][:full['text'].index(stop)], (c, stop, full)
pieces = full['logprobs']['tokens']
last = next(i for i in range(1, len(pieces) + 1) if stop in ''.join(pieces[:i]))  # the token completing it
tokens = c['logprobs']['tokens']
assert tokens == pieces[:last] and r['usage']['completion_tokens'] == last, (tokens, pieces, stop, r['usage'])
" && pass "stop string: nothing past it sent or counted; logprob tokens as text" || fail "stop string"
# Streamed, the same: a token whose text is held (it may begin the stop string) sends no chunk of
# its own; its logprobs come with the next chunk that has text, or with the last.
py "
import json
body = json.load(open('$work/stop-body.json'))
body['stream'] = True
json.dump(body, open('$work/stop-stream-body.json', 'w'))
"
api -N http://moed/v1/completions --data-binary @"$work/stop-stream-body.json" >"$work/stop-stream.txt"
py "
import json
lines = [l for l in open('$work/stop-stream.txt').read().split('\n') if l]
assert lines[-1] == 'data: [DONE]', lines[-1]
chunks = [json.loads(l[6:])['choices'][0] for l in lines[:-1]]
full = json.load(open('$work/nostop.json'))['choices'][0]
stop = json.load(open('$work/stop-body.json'))['stop']
assert ''.join(c['text'] for c in chunks) == full['text'][:full['text'].index(stop)], chunks
assert all(c['text'] for c in chunks[:-1]), [c['text'] for c in chunks]
assert chunks[-1]['finish_reason'] == 'stop', chunks[-1]
pieces = full['logprobs']['tokens']
last = next(i for i in range(1, len(pieces) + 1) if stop in ''.join(pieces[:i]))
assert [t for c in chunks if c['logprobs'] for t in c['logprobs']['tokens']] == pieces[:last], chunks
" && pass "stop string streamed: no empty chunks for held tokens, their logprobs carried" || fail "stop string streamed"

api http://moed/v1/completions -d "$(req 6 0 0 ', "logprobs": 3')" | py "
import json, sys; r = json.load(sys.stdin); lp = r['choices'][0]['logprobs']
assert len(lp['tokens']) == 6 and len(lp['token_logprobs']) == 6 and all(len(t) <= 4 for t in lp['top_logprobs'])
assert all(v <= 0 for v in lp['token_logprobs'])
# As OpenAI's, each token's top list holds the sampled token (up to logprobs + 1 entries; where
# two tokens read as the same text, such as pieces of one character, they share an entry).
assert all(tok in t for t, tok in zip(lp['top_logprobs'], lp['tokens'])), lp
# Each token as the text it adds, spaces included (the decoder strips a leading one only at the
# start of a text): they join to the answer, and each starts at its text_offset.
text = r['choices'][0]['text']
assert ''.join(lp['tokens']) == text, (lp['tokens'], text)
assert lp['text_offset'] == [len(''.join(lp['tokens'][:i])) for i in range(6)], lp
" && pass "logprobs with top_logprobs, tokens as their text" || fail "logprobs"

stop=$(py "import json; t = json.load(open('$work/greedy.json'))['choices'][0]['text']; print(json.dumps(t[4:7]))")
api http://moed/v1/completions -d "$(req 12 0 0 ", \"stop\": [$stop]")" | py "
import json, sys; r = json.load(sys.stdin); c = r['choices'][0]
full = json.load(open('$work/greedy.json'))['choices'][0]['text']
assert c['text'] == full[:full.index($stop)] and c['finish_reason'] == 'stop', (c, full)
" && pass "stop string cuts the text (stop=$stop)" || fail "stop string"

api http://moed/v1/completions -d '{"prompt": [1, 17, 42], "max_tokens": 3, "temperature": 0}' | py "import json,sys; assert json.load(sys.stdin)['usage']['prompt_tokens'] == 3" && pass "token-id prompt" || fail "token-id prompt"

# Chat: the model's template rendered by Python's jinja2 (as transformers does) and tokenized
# without added specials gives the same prompt, so the same greedy reply, as /v1/chat/completions.
messages='[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there."}, {"role": "user", "content": "Name a capital."}]'
rendered=$(py "
import json, sys
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
config = json.load(open('$models/tiny-f32/tokenizer_config.json'))
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
print(env.from_string(config['chat_template']).render(messages=json.loads(sys.argv[1]), add_generation_prompt=True,
      bos_token=config['bos_token'], eos_token=config['eos_token']), end='')
" "$messages")
ids=$("$moed" tokenize --model "$models/tiny-f32" --no-special --text "$rendered")
api http://moed/v1/completions -d "{\"prompt\": [$ids], \"max_tokens\": 10, \"temperature\": 0}" >"$work/chat-ref.json"
api http://moed/v1/chat/completions -d "{\"messages\": $messages, \"max_tokens\": 10, \"temperature\": 0}" >"$work/chat.json"
py "
import json; r = json.load(open('$work/chat.json')); ref = json.load(open('$work/chat-ref.json'))
c = r['choices'][0]
assert r['object'] == 'chat.completion' and r['id'].startswith('chatcmpl-'), r
assert c['message']['role'] == 'assistant' and c['finish_reason'] in ('length', 'stop'), c
assert r['usage']['prompt_tokens'] == ref['usage']['prompt_tokens'] == len('$ids'.split(',')), (r['usage'], ref['usage'])
assert c['message']['content'] == ref['choices'][0]['text'], (c, ref)
" && pass "chat: template as jinja2 renders it, same reply as the completion of that prompt" || fail "chat: $(cat "$work/chat.json")"

api -N http://moed/v1/chat/completions -d "{\"messages\": $messages, \"max_tokens\": 10, \"temperature\": 0, \"stream\": true, \"stream_options\": {\"include_usage\": true}, \"logprobs\": true, \"top_logprobs\": 2}" >"$work/chat-stream.txt"
py "
import json
lines = [l for l in open('$work/chat-stream.txt').read().split('\n') if l]
assert lines[-1] == 'data: [DONE]', lines[-1]
chunks = [json.loads(l[6:]) for l in lines[:-1]]
assert all(c['object'] == 'chat.completion.chunk' for c in chunks)
usage = chunks.pop()  # include_usage: a last chunk with no choices and the usage
assert usage['choices'] == [] and all(c['usage'] is None for c in chunks), usage
assert chunks[0]['choices'][0]['delta']['role'] == 'assistant'
text = ''.join(c['choices'][0]['delta'].get('content', '') for c in chunks)
assert text == json.load(open('$work/chat.json'))['choices'][0]['message']['content'], text
tokens = [t for c in chunks if c['choices'][0]['logprobs'] for t in c['choices'][0]['logprobs']['content']]
assert len(tokens) == usage['usage']['completion_tokens'], tokens
assert all(len(t['top_logprobs']) == 2 and t['logprob'] <= 0 for t in tokens), tokens
assert chunks[-1]['choices'][0]['finish_reason'] in ('length', 'stop')
" && pass "chat stream: role first, same text, logprobs per token, usage chunk when asked, [DONE]" || fail "chat stream"
# Chat has no default limit of OpenAI's: without max_tokens the answer runs to EOS or to the
# daemon's limits.default_chat_max_tokens (40 here).
api http://moed/v1/chat/completions -d "{\"messages\": $messages, \"temperature\": 0}" | py "
import json, sys
r = json.load(sys.stdin); u = r['usage']; reason = r['choices'][0]['finish_reason']
assert (reason == 'length' and u['completion_tokens'] == 40) or (reason == 'stop' and u['completion_tokens'] < 40), r
" && pass "chat without max_tokens runs to the daemon's default, not 16" || fail "chat without max_tokens"

chat_req() { echo "{\"messages\": [{\"role\": \"user\", \"content\": \"Tell me a story\"}], \"max_tokens\": 12, \"temperature\": 0.9, \"seed\": $1}"; }
reply_of() { py "import json,sys; print(json.load(sys.stdin)['choices'][0]['message']['content'])"; }
c1=$(api http://moed/v1/chat/completions -d "$(chat_req 5)" | reply_of)
c2=$(api http://moed/v1/chat/completions -d "$(chat_req 5)" | reply_of)
[[ -n $c1 && $c1 == "$c2" ]] && pass "chat: same seed, same reply" || fail "chat seeds: '$c1' vs '$c2'"

# 8 concurrent clients get the tokens each gets alone, while other connections read the stats
# and set the budget: HTTP threads reading what the scheduler's thread changes as it computes
# (scripts/tsan.sh runs this under ThreadSanitizer). The poller makes at least one full round.
for i in $(seq 1 8); do api http://moed/v1/completions -d "$(req $((8 + i)) 0.8 $i)" >"$work/alone$i.json"; done
(
  while true; do
    api http://moed/metrics | grep -q '^moed_host_budget_bytes ' && echo metrics >>"$work/polls"
    api http://moed/admin/cache | grep -q '"budget_bytes"' && echo cache >>"$work/polls"
    api http://moed/admin/cache -d '{"host_budget": "50%"}' | grep -q '"budget_bytes"' && echo budget >>"$work/polls"
    [[ -e $work/clients-done ]] && break
  done
) &
poller=$!
clients=()
for i in $(seq 1 8); do api http://moed/v1/completions -d "$(req $((8 + i)) 0.8 $i)" >"$work/together$i.json" & clients+=($!); done
wait "${clients[@]}"
touch "$work/clients-done"
wait $poller
same=1
for i in $(seq 1 8); do
  py "import json; a=json.load(open('$work/alone$i.json')); b=json.load(open('$work/together$i.json')); assert a['choices'][0]['text'] == b['choices'][0]['text']" || same=0
done
answered=$(sort -u "$work/polls" | tr '\n' ' ')
((same)) && [[ $answered == "budget cache metrics " ]] && pass "8 concurrent clients, stats read and budget set meanwhile: same text as alone" ||
  fail "concurrent clients differ, or stats calls failed meanwhile (answered: $answered)"
kill -0 "$pid" 2>/dev/null || { fail "the daemon died under concurrent clients; its log:"; tail -40 "$work/daemon.log"; exit 1; }

# A client killed mid-stream frees its session.
curl -sN --unix-socket "$sock" http://moed/v1/completions -d "$(req 3000 0.9 1 ', "stream": true')" >/dev/null &
victim=$!
sleep 0.5
kill -9 $victim 2>/dev/null
freed=0
for _ in $(seq 1 50); do
  api http://moed/metrics | grep -q '^moed_active_sessions 0$' && { freed=1; break; }
  sleep 0.1
done
((freed)) && pass "client killed mid-stream: session freed" || fail "session not freed after client died"

metric_value() { api http://moed/metrics | awk -v name="$1" '$1 == name {print $2}'; }
# wait_for_disconnects N: until the daemon has counted N clients gone (at most 60 s).
wait_for_disconnects() {
  for _ in $(seq 1 600); do
    [[ $(metric_value moed_client_disconnects_total) == "$1" ]] && return 0
    sleep 0.1
  done
  return 1
}
no_active_sessions() {
  for _ in $(seq 1 50); do
    [[ $(metric_value moed_active_sessions) == 0 ]] && return 0
    sleep 0.1
  done
  return 1
}
[[ $(metric_value moed_compute_threads) == 1 ]] && pass "compute runs on the configured thread count (compute.threads: 1)" || fail "compute threads: $(metric_value moed_compute_threads), configured 1"
gone=$(metric_value moed_client_disconnects_total)
# A non-streaming client killed while it waits: its generation is cancelled, not run to max_tokens.
tokens_before=$(metric_value moed_generated_tokens_total)
# Greedy "Once" runs 3000 tokens without an EOS on the tiny model, so only a cancel ends it early.
curl -s --unix-socket "$sock" http://moed/v1/completions -d '{"prompt": "Once", "max_tokens": 3000, "temperature": 0}' >/dev/null &
victim=$!
sleep 0.5
kill -9 $victim 2>/dev/null
if wait_for_disconnects $((gone + 1)); then
  py "assert $(metric_value moed_generated_tokens_total) - $tokens_before < 3000" &&
    no_active_sessions && pass "non-streaming client killed: generation cancelled" || fail "non-streaming client killed: not cancelled"
else fail "non-streaming client killed: never noticed"; fi
# A streaming client that stops reading (and keeps its connection open) is closed after
# limits.send_timeout_ms and its generation cancelled.
py "
import socket, time, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect('$sock')
body = b'{\"prompt\": \"Once\", \"max_tokens\": 3000, \"temperature\": 0, \"stream\": true, \"logprobs\": 20}'
s.sendall(b'POST /v1/completions HTTP/1.1\r\nHost: moed\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n' % len(body) + body)
open('$work/stalled', 'w').close()
time.sleep(90)
" &
stalled=$!
for _ in $(seq 1 50); do [[ -e $work/stalled ]] && break; sleep 0.1; done
if wait_for_disconnects $((gone + 2)); then
  no_active_sessions && kill -0 $stalled 2>/dev/null &&
    pass "client that stops reading: closed after the send timeout, generation cancelled" ||
    fail "client that stops reading: session still active"
else fail "client that stops reading: never closed"; fi
kill $stalled 2>/dev/null

# Bad input: a 4xx with a clear message, and the daemon keeps serving.
expect() {  # NAME CODE PATTERN CURL-ARGS...
  local name=$1 want=$2 pattern=$3
  shift 3
  local got
  got=$(status_of "$@")
  if [[ $got == "$want" ]] && grep -q -- "$pattern" "$work/body"; then pass "$name -> $got"; else fail "$name -> $got $(head -c 300 "$work/body")"; fi
}
expect "invalid JSON" 400 "not valid JSON" http://moed/v1/completions -d '{"prompt": "x",'
expect "wrong type" 400 '"param":"max_tokens"' http://moed/v1/completions -d '{"prompt": "x", "max_tokens": "ten"}'
expect "negative max_tokens" 400 "max_tokens" http://moed/v1/completions -d '{"prompt": "x", "max_tokens": -1}'
expect "huge max_tokens" 400 "context" http://moed/v1/completions -d '{"prompt": "x", "max_tokens": 100000000}'
expect "token id out of range" 400 "outside the vocabulary" http://moed/v1/completions -d '{"prompt": [1, 99999]}'
long=$(py "print(','.join(['5'] * 5000))")
expect "prompt longer than the context" 400 '"code":"context_length_exceeded"' http://moed/v1/completions -d "{\"prompt\": [$long]}"
head -c 100000 /dev/zero | tr '\0' 'a' >"$work/big"
expect "oversized body" 413 "exceeds" http://moed/v1/completions -H 'Content-Type: application/json' --data-binary @"$work/big"
# A client that asks before sending its body (Expect: 100-continue) is told to go on at once,
# rather than left to send it after its own timeout (10 s here).
start=$(date +%s)
api --expect100-timeout 10 -H 'Expect: 100-continue' http://moed/v1/completions -d "$(req 2)" | py "import json,sys; assert json.load(sys.stdin)['usage']['completion_tokens'] == 2" &&
  (($(date +%s) - start < 8)) && pass "Expect: 100-continue answered" || fail "Expect: 100-continue"
# A client refused for its body's size that goes on sending a byte now and then is let go
# after the lingering close's second, not drained for as long as it keeps sending.
py "
import socket, time
s = socket.socket(socket.AF_UNIX); s.connect('$sock'); s.settimeout(5)
s.sendall(b'POST /v1/completions HTTP/1.1\\r\\nHost: moed\\r\\nContent-Length: 100000000\\r\\n\\r\\nx')
assert b' 413 ' in s.recv(4096).split(b'\\r\\n')[0], 'no 413'
start = time.time()
try:
    while time.time() - start < 6:
        s.sendall(b'x'); time.sleep(0.15)
    closed = False
except (BrokenPipeError, ConnectionResetError):
    closed = True
assert closed and time.time() - start < 4, 'a dripping client held its refused connection open'
" && pass "dripping client after a 413 is let go" || fail "dripping client after a 413"
expect "unknown route" 404 "no route" http://moed/v2/everything
expect "unknown model" 404 "model_not_found" http://moed/v1/completions -d '{"model": "gpt-9", "prompt": "x"}'
expect "temperature out of range" 400 "temperature" http://moed/v1/completions -d '{"prompt": "x", "temperature": 9}'
expect "n > 1" 400 '"param":"n"' http://moed/v1/completions -d '{"prompt": "x", "n": 2}'
expect "best_of > 1" 400 '"param":"best_of"' http://moed/v1/completions -d '{"prompt": "x", "best_of": 3}'
expect "suffix" 400 '"param":"suffix"' http://moed/v1/completions -d '{"prompt": "x", "suffix": "end"}'
expect "JSON schema whose root is not an object" 400 '"param":"response_format.json_schema.schema"' http://moed/v1/completions -d '{"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}'
expect "logit_bias key not a token id" 400 '"param":"logit_bias.the"' http://moed/v1/completions -d '{"prompt": "x", "logit_bias": {"the": 5}}'
expect "presence_penalty out of range" 400 '"param":"presence_penalty"' http://moed/v1/completions -d '{"prompt": "x", "presence_penalty": 3}'
# logit_bias steers the draw: +100 on one token makes a greedy answer that token throughout,
# while the reported log-probabilities stay the model's own.
api http://moed/v1/completions -d '{"prompt": "Hello", "max_tokens": 4, "temperature": 0, "logprobs": 1, "logit_bias": {"17": 100}}' | py "
import json, sys; r = json.load(sys.stdin); lp = r['choices'][0]['logprobs']
assert len(set(lp['tokens'])) == 1 and all(v < -0.01 for v in lp['token_logprobs']), lp
" && pass "logit_bias forces a token; logprobs stay the model's" || fail "logit_bias"
expect "wrong method" 405 "not allowed" -X DELETE http://moed/v1/models
# CORS: a page from a listed origin may read answers, streamed or not, and its preflight is told
# what it asked; another origin's requests get no CORS headers, so its browser refuses them.
cors_head() { curl -s -o /dev/null -D - --max-time 30 --unix-socket "$sock" "$@" | tr -d '\r'; }
preflight=$(cors_head -X OPTIONS -H "Origin: http://localhost:3000" -H "Access-Control-Request-Method: POST" -H "Access-Control-Request-Headers: content-type, authorization" http://moed/v1/chat/completions)
plain=$(cors_head -H "Origin: http://localhost:3000" http://moed/v1/models)
streamed=$(cors_head -N -H "Origin: http://localhost:3000" http://moed/v1/completions -d '{"prompt": "Hi", "max_tokens": 2, "stream": true}')
other=$(cors_head -H "Origin: http://elsewhere.example" http://moed/v1/models)
other_preflight=$(cors_head -X OPTIONS -H "Origin: http://elsewhere.example" -H "Access-Control-Request-Method: POST" http://moed/v1/chat/completions)
grep -q "^HTTP/1.1 204" <<<"$preflight" && grep -q "^Access-Control-Allow-Origin: http://localhost:3000$" <<<"$preflight" &&
  grep -q "^Access-Control-Allow-Methods: GET, HEAD, POST$" <<<"$preflight" &&
  grep -q "^Access-Control-Allow-Headers: content-type, authorization$" <<<"$preflight" &&
  ! grep -qi "^Content-Length" <<<"$preflight" &&
  grep -q "^Access-Control-Allow-Origin: http://localhost:3000$" <<<"$plain" && grep -q "^Vary: Origin$" <<<"$plain" &&
  grep -q "^Access-Control-Allow-Origin: http://localhost:3000$" <<<"$streamed" &&
  ! grep -qi "^Access-Control" <<<"$other" && ! grep -qi "^Access-Control" <<<"$other_preflight" &&
  grep -q "^Allow: GET, HEAD, POST, OPTIONS$" <<<"$other_preflight" &&
  pass "CORS for listed origins only: preflight, plain and streamed answers" ||
  fail "CORS: preflight [$preflight] plain [$plain] streamed [$streamed] other [$other] [$other_preflight]"
py "
import socket
def ask(request):
    s = socket.socket(socket.AF_UNIX); s.connect('$sock'); s.settimeout(5)
    s.sendall(request)
    return s
unread = {}  # per socket: bytes received past the answers read so far
def read_answer(s, body=True):  # one answer: its head, then Content-Length bytes of body
    data = unread.pop(s, b'')
    while b'\\r\\n\\r\\n' not in data:
        chunk = s.recv(65536)
        assert chunk, 'closed before a whole answer: %r' % data
        data += chunk
    head, _, rest = data.partition(b'\\r\\n\\r\\n')
    length = int([l for l in head.split(b'\\r\\n') if l.lower().startswith(b'content-length:')][0].split(b':')[1]) if body else 0
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk, 'closed inside a body: %r' % rest
        rest += chunk
    unread[s] = rest[length:]
    return head, rest[:length]
def closed_after(s):  # the server closed: a further request gets no answer
    try:
        s.sendall(b'GET /health HTTP/1.1\\r\\nHost: moed\\r\\n\\r\\n')
        return s.recv(65536) == b''
    except (BrokenPipeError, ConnectionResetError):
        return True
# 405 names the methods the route takes (RFC 9110, 15.5.6).
head, _ = read_answer(ask(b'DELETE /v1/models HTTP/1.1\\r\\nHost: moed\\r\\n\\r\\n'))
assert head.startswith(b'HTTP/1.1 405') and b'\\r\\nAllow: GET, HEAD' in head, head
# HEAD: GET's head, Content-Length included, and no body; the next answer on the connection
# is read whole, not from a stray body.
s = ask(b'HEAD /health HTTP/1.1\\r\\nHost: moed\\r\\n\\r\\nGET /health HTTP/1.1\\r\\nHost: moed\\r\\n\\r\\n')
head, _ = read_answer(s, body=False)
assert head.startswith(b'HTTP/1.1 200'), head
head, body = read_answer(s)
assert head.startswith(b'HTTP/1.1 200') and body.startswith(b'{'), (head, body)
# HTTP/1.0 without Keep-Alive: the answer says nothing of keep-alive and the server closes
# after it (RFC 9112, 9.3), rather than holding the connection for another request.
s = ask(b'GET /health HTTP/1.0\\r\\nHost: moed\\r\\n\\r\\n')
head, _ = read_answer(s)
assert head.startswith(b'HTTP/1.0 200') and b'keep-alive' not in head.lower(), head
assert closed_after(s), 'an HTTP/1.0 answer without keep-alive left the connection open'
# HTTP/1.0 asking for Keep-Alive gets it said back, and a second request on the connection.
s = ask(b'GET /health HTTP/1.0\\r\\nHost: moed\\r\\nConnection: keep-alive\\r\\n\\r\\n')
head, _ = read_answer(s)
assert head.startswith(b'HTTP/1.0 200') and b'connection: keep-alive' in head.lower(), head
s.sendall(b'GET /health HTTP/1.0\\r\\nHost: moed\\r\\n\\r\\n')
head, _ = read_answer(s)
assert head.startswith(b'HTTP/1.0 200'), head
" && pass "405 names Allow; HEAD has no body; HTTP/1.0 keep-alive as asked" || fail "Allow, HEAD or HTTP/1.0 keep-alive"
expect "chat: no messages" 400 '"param":"messages"' http://moed/v1/chat/completions -d '{"max_tokens": 3}'
expect "chat: roles out of order" 400 "must alternate" http://moed/v1/chat/completions -d '{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}'
expect "chat: message without role" 400 'messages\[0\].role' http://moed/v1/chat/completions -d '{"messages": [{"content": "a"}]}'
expect "chat: null content the template cannot join" 400 "cannot render" http://moed/v1/chat/completions -d '{"messages": [{"role": "user", "content": null}]}'
expect "chat: image part" 400 "text only" http://moed/v1/chat/completions -d '{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}'
expect "chat: top_logprobs without logprobs" 400 "top_logprobs" http://moed/v1/chat/completions -d '{"messages": [{"role": "user", "content": "a"}], "top_logprobs": 2}'
expect "json_schema: a keyword a strict schema asks that moed cannot enforce" 400 '"param":"response_format.json_schema.schema/properties/n/uniqueItems"' http://moed/v1/completions -d '{"prompt": "a", "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": true, "schema": {"type": "object", "properties": {"n": {"type": "array", "uniqueItems": true}}}}}}'
expect "json_schema: a pattern moed cannot hold, naming the byte" 400 'at byte 1 of the pattern: lookahead' http://moed/v1/completions -d '{"prompt": "a", "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": true, "schema": {"type": "object", "properties": {"s": {"type": "string", "pattern": "a(?=b)"}}}}}}'
expect "chat: a tool call forced" 400 '"param":"tool_choice"' http://moed/v1/chat/completions -d '{"messages": [{"role": "user", "content": "a"}], "tool_choice": "required"}'
expect "chat: a response_format type that is none of OpenAI's" 400 '"param":"response_format.type"' http://moed/v1/chat/completions -d '{"messages": [{"role": "user", "content": "a"}], "response_format": {"type": "xml"}}'
api http://moed/v1/chat/completions -d '{"messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0, "response_format": {"type": "text"}, "tool_choice": "auto"}' |
  py "import json,sys; r=json.load(sys.stdin); assert r['usage']['completion_tokens'] == 2, r" &&
  pass "chat: the developer role is the system's" || fail "chat: developer role"
# Slow-loris: a request head dribbled in slower than header_timeout_ms is cut off.
py "
import socket, time
s = socket.socket(socket.AF_UNIX); s.connect('$sock'); s.settimeout(5)
s.sendall(b'GET /health HTTP/1.1\r\nHost: moed\r\n')
start = time.time()
try:
    for _ in range(20):
        s.sendall(b'X-Slow: 1\r\n'); time.sleep(0.2)
    closed = s.recv(1) == b''
except (BrokenPipeError, ConnectionResetError):
    closed = True
assert closed and time.time() - start < 3, 'slow client was not cut off'
" && pass "slow-loris head is cut off" || fail "slow-loris"
[[ $(status_of http://moed/health) == 200 ]] && pass "still serving after bad input" || fail "daemon stopped serving"

# Metrics in Prometheus text format.
api http://moed/metrics | py "
import re, sys
names = set()
loads = 0
for line in sys.stdin.read().splitlines():
    if not line or line.startswith('#'): continue
    m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)', line)
    assert m, line
    float(m.group(3)); names.add(m.group(1))
    if m.group(1) == 'moed_disk_loads_total': loads += float(m.group(3))
    if m.group(1) == 'moed_disk_load_seconds_total': assert float(m.group(3)) >= 0, line
assert loads > 0, 'no disk loads counted at a 50% budget'
for n in ('moed_tokens_per_second', 'moed_queue_length', 'moed_active_sessions', 'moed_host_hit_ratio',
          'moed_disk_read_bytes_total', 'moed_disk_staging_bytes', 'moed_host_used_bytes', 'moed_prefetch_accuracy',
          'moed_layer_hits_total', 'moed_kv_bytes', 'moed_kv_limit_bytes', 'moed_host_bypasses_total',
          'moed_host_admission_refusals_total', 'moed_prefetch_predictions_total',
          'moed_prefetch_predictions_used_total', 'moed_prefetch_horizon_issued_total',
          'moed_prefetch_outcomes_total', 'moed_disk_loads_total', 'moed_disk_load_seconds_total',
          'moed_host_policy_half_life'):
    assert n in names, n
" && pass "metrics parse" || fail "metrics"

# Admin: allowed for root and the daemon's uid, refused for another uid.
[[ $(status_of http://moed/admin/cache) == 200 ]] && pass "admin allowed for the daemon's uid" || fail "admin for owner"
if id nobody >/dev/null 2>&1; then
  code=$(setpriv --reuid=nobody --regid=nogroup --clear-groups curl -s -o /dev/null -w '%{http_code}' --unix-socket "$sock" http://moed/admin/cache)
  [[ $code == 403 ]] && pass "admin refused for nobody" || fail "admin for nobody -> $code"
  code=$(setpriv --reuid=nobody --regid=nogroup --clear-groups curl -s -o /dev/null -w '%{http_code}' --unix-socket "$sock" http://moed/health)
  [[ $code == 200 ]] && pass "nobody may still use the API" || fail "health for nobody -> $code"
fi
expect "admin: bad policy" 400 "'random' is not one of lru, lfu, arc, tinylfu" http://moed/admin/cache -d '{"policy": "random"}'
api -X POST http://moed/admin/pin -d '{"layer": 1, "expert": 3}' | grep -q '"pinned":true' && pass "pin an expert" || fail "pin"
api http://moed/admin/cache -d '{"auto_pin": 0.25}' | py "import json,sys; h = json.load(sys.stdin)['host']; assert h['auto_pin_share'] == 0.25; assert {'block': 'L1:E3', 'layer': 1, 'expert': 3, 'by': 'admin'}.items() <= h['pins'][0].items(), h['pins']" &&
  [[ $(status_of http://moed/admin/cache -d '{"auto_pin": 2}') == 400 ]] && pass "automatic pins on; pins say who pinned them" || fail "auto pin"
api http://moed/admin/experts | py "import json,sys; d=json.load(sys.stdin); assert len(d['counts']) == 4 and sum(map(sum, d['counts'])) > 0" && pass "activation counts" || fail "experts"
api -X POST http://moed/admin/trace/start >/dev/null
api http://moed/v1/completions -d "$(req 8)" >/dev/null
api -X POST http://moed/admin/trace/stop >/dev/null
api http://moed/admin/trace >"$work/trace.jsonl"
[[ $(wc -l <"$work/trace.jsonl") -gt 0 ]] && pass "trace recorded and downloaded ($(wc -l <"$work/trace.jsonl") lines)" || fail "trace"
api http://moed/admin/trace/simulate -d '{"blocks": [4, 8]}' | py "import json,sys; d=json.load(sys.stdin); assert len(d['results']) == 10 and {r['policy'] for r in d['results']} == {'lru', 'lfu', 'arc', 'tinylfu', 'belady'}" && pass "simulate the recorded trace" || fail "admin simulate"
api http://moed/admin/trace/simulate -d '{"blocks": [4, 8], "auto_pin": 0.5, "prefetch": 1}' | py "
import json,sys
d = json.load(sys.stdin)
assert d['auto_pin'] == 0.5 and len(d['results']) == 10 and d['prefetch']['horizons'] == 1, d
results = d['prefetch']['results']
assert len(results) == 8 and all(0 <= r['hits'] <= r['requests'] and len(r['horizons']) == 1 for r in results), results
" && pass "simulate the recorded trace with automatic pins and prefetch" || fail "admin simulate with auto_pin"
api http://moed/admin/trace/simulate -d '{"blocks": [4, 8], "prefetch": 2, "predictor": "previous"}' | py "
import json,sys
d = json.load(sys.stdin)
p = d['prefetch']
assert p['horizons'] == 2 and p['predictor'] == 'previous', p
assert [a['horizon'] for a in p['accuracy']] == [1, 2] and all(0 <= a['precision'] <= 1 for a in p['accuracy'])
assert len(p['results']) == 8 and 'belady' not in {r['policy'] for r in p['results']}
plain = {(r['policy'], r['blocks']): r['hits'] for r in d['results']}
assert all(r['hits_without_prefetch'] == plain[(r['policy'], r['blocks'])] and len(r['horizons']) == 2 for r in p['results'])
" && pass "simulate the recorded trace with prefetch" || fail "admin simulate with prefetch"
expect "simulate: bad predictor" 400 '"param":"predictor"' http://moed/admin/trace/simulate -d '{"blocks": [4], "prefetch": 1, "predictor": "oracle"}'
expect "simulate: horizon out of range" 400 '"param":"prefetch"' http://moed/admin/trace/simulate -d '{"blocks": [4], "prefetch": 3}'
# Trace starts and downloads on several connections at once all answer (scripts/tsan.sh checks
# that they share the recorded trace's path without a race).
admins=()
for i in $(seq 1 6); do
  api -X POST http://moed/admin/trace/start >"$work/start$i.json" & admins+=($!)
  api -o /dev/null -w '%{http_code}' http://moed/admin/trace >"$work/download$i.code" & admins+=($!)
done
wait "${admins[@]}"
api -X POST http://moed/admin/trace/stop >/dev/null
answered=0
for i in $(seq 1 6); do
  grep -q '"recording":true' "$work/start$i.json" && [[ $(cat "$work/download$i.code") == 200 ]] && answered=$((answered + 1))
done
[[ $answered == 6 ]] && pass "concurrent trace starts and downloads all answer" || fail "concurrent trace calls: $answered of 6 pairs answered"

# moectl, built on the client library.
ctl() { "$moectl" --socket "$sock" "$@"; }
g1=$(ctl generate "The capital of France is" -n 12 --temperature 0)
g2=$(ctl generate "The capital of France is" -n 12 --temperature 0 --stream)
[[ -n $g1 && $g1 == "$g2" ]] && pass "moectl generate (plain and streamed agree)" || fail "moectl generate: '$g1' vs '$g2'"
ctl status | grep -q "^status    ok" && pass "moectl status" || fail "moectl status"
one=$(ctl --json chat "Name a capital." --temperature 0 -n 6 | py "import json,sys; print(json.load(sys.stdin)['reply'])")
session=$(printf 'Hello\n/reset\nName a capital.\n' | ctl --json chat --temperature 0 -n 6 | py "
import json, sys
replies = [json.loads(l) for l in sys.stdin]
assert len(replies) == 2, replies
print(replies[1]['reply'])")
streamed=$(ctl chat "Name a capital." --temperature 0 -n 6)
[[ -n $one && $one == "$session" && $one == "$streamed" ]] && pass "moectl chat (one-shot, session with /reset, streamed agree)" || fail "moectl chat: '$one' / '$session' / '$streamed'"
ctl generate "The answer in JSON:" -n 64 --temperature 1 --seed 2 --json-object >"$work/ctl-json.txt"
py "import json; assert isinstance(json.loads(open('$work/ctl-json.txt').read()), dict)" &&
  pass "moectl generate --json-object: a JSON object" || fail "moectl --json-object: $(cat "$work/ctl-json.txt")"
# moectl --json-schema FILE sends the schema with its properties in the file's order.
echo '{"type": "object", "properties": {"zeta": {"type": "boolean"}, "alpha": {"enum": ["x", "y"]}}, "required": ["zeta", "alpha"], "additionalProperties": false}' >"$work/ctl-schema.json"
ctl --json generate "The answer in JSON:" -n 128 --temperature 1 --seed 2 --json-schema "$work/ctl-schema.json" >"$work/ctl-schema-answer.json"
py "
import json, jsonschema
answer = json.load(open('$work/ctl-schema-answer.json'))
assert answer['finish_reason'] == 'stop', answer
instance = json.loads(answer['text'])
jsonschema.validate(instance, json.load(open('$work/ctl-schema.json')))
assert list(instance) == ['zeta', 'alpha'], instance
" && pass "moectl generate --json-schema: an instance, its properties in the schema's order" || fail "moectl --json-schema: $(cat "$work/ctl-schema-answer.json")"
[[ $(ctl models) == tiny-f32 ]] && pass "moectl models" || fail "moectl models"
ctl cache show | grep -q "^host" && ctl cache show | grep -q "staging [0-9]* MiB" &&
  ctl cache show | grep -q "^kv .*bf16, within the host budget" &&
  ctl cache show | grep -q "^1 layer ahead  *[0-9]" && ctl cache show | grep -q "pinned: L1:E3 by admin" &&
  ctl --json cache show | py "import json,sys; c = json.load(sys.stdin); c['host']; assert c['disk']['staging_bytes'] > 0; assert c['kv']['dtype'] == 'bf16' and c['kv']['limit_bytes'] > 0; assert [h['horizon'] for h in c['prefetch']['horizons']] == [1, 2]; assert sorted(c['disk']['load_stages']) == ['demand', 'prefetch', 'raised_prefetch']" &&
  ctl cache show | grep -q "load stages, mean ms" &&
  ctl cache show | grep -q "tinylfu counts deciding: half-life of [0-9.]* requests per block seen" &&
  ctl --json cache show | py "import json,sys; assert json.load(sys.stdin)['host']['policy_half_life'] in (1, 4, 32)" &&
  pass "moectl cache show (table and --json)" || fail "moectl cache show"
ctl --json cache set --policy lfu | py "import json,sys; h = json.load(sys.stdin)['host']; assert h['policy'] == 'lfu' and h['policy_half_life'] == 0" && pass "moectl cache set --policy" || fail "cache set"
ctl --json cache set --policy arc | py "import json,sys; assert json.load(sys.stdin)['host']['policy'] == 'arc'" && pass "moectl cache set --policy arc" || fail "cache set arc"
ctl cache set --policy tinylfu >/dev/null
ctl --json cache set --auto-pin 0.5 | py "import json,sys; assert json.load(sys.stdin)['host']['auto_pin_share'] == 0.5" && pass "moectl cache set --auto-pin" || fail "cache set --auto-pin"
ctl cache set --gpu 8GiB 2>"$work/err"; [[ $? -eq 1 ]] && grep -q "no GPU tier" "$work/err" && pass "moectl cache set --gpu: a CPU-only daemon says so" || fail "cache set --gpu: $(cat "$work/err")"
ctl cache pin 2:1 | grep -q "L2:E1 pinned" && pass "moectl cache pin" || fail "cache pin"
ctl cache pin 2 2>"$work/err"; [[ $? -eq 1 ]] && grep -q "LAYER:EXPERT" "$work/err" && pass "moectl: bad block is named" || fail "cache pin bad"
ctl experts | grep -q "^    0  " && pass "moectl experts heatmap" || fail "moectl experts"
# Generations go on for as long as the recording lasts, so that some land inside it however slow
# the two processes start.
ctl trace record 2s -o "$work/recorded.jsonl" 2>/dev/null &
recorder=$!
while kill -0 $recorder 2>/dev/null; do ctl generate "Hello" -n 8 >/dev/null; done
wait $recorder
[[ -s $work/recorded.jsonl ]] && ctl trace simulate "$work/recorded.jsonl" --blocks 2,4 | grep -q belady && pass "moectl trace record + simulate" || fail "trace record"
ctl trace simulate "$work/recorded.jsonl" --host 25%..100% --steps 4 --plot "$work/hit.png" 2>/dev/null >"$work/sim.txt"
[[ $(grep -c '%' "$work/sim.txt") -ge 4 && $(head -c 8 "$work/hit.png" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] &&
  pass "moectl trace simulate --host 25%..100% --plot (table and PNG)" || fail "trace simulate --host: $(cat "$work/sim.txt")"
ctl trace simulate "$work/recorded.jsonl" --host 1GiB..2GiB 2>"$work/err"; [[ $? -eq 1 ]] && grep -q "expert-size" "$work/err" && pass "moectl: a size range asks for --expert-size" || fail "host sizes without --expert-size"
ctl generate "x" -n 100000000 2>"$work/err"; [[ $? -eq 1 ]] && grep -q "HTTP 400" "$work/err" && pass "moectl shows the daemon's error" || fail "moectl error"
"$moectl" --socket "$work/none.sock" status 2>"$work/err"; [[ $? -eq 1 ]] && grep -q "is the daemon running" "$work/err" && pass "moectl: no daemon is a clear error" || fail "moectl no daemon"

# The installed client package works from another CMake project.
if [[ -n ${MOED_SANITIZED:-} ]]; then
  echo "skip client package: sanitizer build (checked in the normal build)"
elif cmake --install "$build" --prefix "$work/prefix" >/dev/null 2>&1 &&
   cmake -S "$source/tests/e2e/client_consumer" -B "$work/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null 2>&1 &&
   cmake --build "$work/consumer" >/dev/null 2>&1 &&
   [[ $("$work/consumer/consumer" "$sock" | tr '\n' ' ') == "4 length 400 max_tokens chat 3 3 same " ]]; then
  pass "find_package(moed) + moed::client from an installed prefix"
else
  fail "client package"
fi
if [[ -z ${MOED_SANITIZED:-} ]]; then
  [[ -f $work/prefix/etc/moed/moed.yaml && -f $work/prefix/lib/systemd/system/moed.service && -x $work/prefix/bin/moectl ]] &&
    pass "cmake --install puts binaries, config and units in place" || fail "install layout"
fi

# SIGHUP re-reads the budget.
before=$(api http://moed/admin/cache | py "import json,sys; print(json.load(sys.stdin)['host']['budget_bytes'])")
sed -i 's/host_budget: 50%/host_budget: 25%/' "$work/moed.yaml"
kill -HUP $pid
changed=0
for _ in $(seq 1 50); do
  after=$(api http://moed/admin/cache | py "import json,sys; print(json.load(sys.stdin)['host']['budget_bytes'])")
  [[ $after -lt $before ]] && { changed=1; break; }
  sleep 0.1
done
((changed)) && pass "SIGHUP applied the new budget ($before -> $after)" || fail "SIGHUP budget"

# SIGTERM drains: a running stream completes, then the daemon exits 0 and removes its socket.
# A request half sent when the signal comes is answered too, not reset. It decodes greedily, so
# that its three tokens are always the same and none ends the text (sampled at the default
# temperature, the end-of-text token came first once in CI: finish_reason "stop", no text).
curl -sN --unix-socket "$sock" http://moed/v1/completions -d "$(req 200 0.9 2 ', "stream": true, "stream_options": {"include_usage": true}')" >"$work/drain.txt" &
streamer=$!
py "
import socket, os, time
body = b'{\"prompt\": \"Hello\", \"max_tokens\": 3, \"temperature\": 0}'
s = socket.socket(socket.AF_UNIX)
s.connect('$sock')
s.sendall(b'POST /v1/completions HTTP/1.1\r\nHost: moed\r\n')
open('$work/half-sent', 'w').close()
while not os.path.exists('$work/term-sent'): time.sleep(0.01)
time.sleep(0.3)
s.sendall(b'Content-Type: application/json\r\nContent-Length: %d\r\n\r\n' % len(body) + body)
answer = b''
while chunk := s.recv(65536): answer += chunk
open('$work/half.txt', 'wb').write(answer)
" &
halfsender=$!
for _ in $(seq 1 600); do grep -q '^data: {' "$work/drain.txt" 2>/dev/null && [[ -e $work/half-sent ]] && break; sleep 0.05; done
kill -TERM $pid
touch "$work/term-sent"
wait $pid
rc=$?
pid=""
wait $streamer
wait $halfsender
head -1 "$work/half.txt" | grep -q '^HTTP/1.1 200' && grep -q '"completion_tokens":3' "$work/half.txt" && pass "a request half sent at SIGTERM was answered" || fail "half-sent request at SIGTERM: $(head -c 300 "$work/half.txt")"
py "
import json
lines = [l for l in open('$work/drain.txt').read().split('\n') if l]
assert lines[-1] == 'data: [DONE]'
last, usage = json.loads(lines[-3][6:]), json.loads(lines[-2][6:])
assert last['choices'][0]['finish_reason'] in ('length', 'stop') and usage['usage']['completion_tokens'] > 1
" && [[ $rc -eq 0 && ! -e $sock ]] && pass "SIGTERM drained the stream and exited 0" || fail "SIGTERM drain (rc=$rc)"

# SIGTERM while the model loads does not wait for the load: here it never ends (config.json is a
# FIFO no one writes), as a large model on a slow disk would outlast systemd's stop timeout.
mkdir "$work/stuck"
cp "$models/tiny-f32/"* "$work/stuck/"
rm "$work/stuck/config.json"
mkfifo "$work/stuck/config.json"
"$moed" --model "$work/stuck" --socket "$work/stuck.sock" 2>"$work/stuck.log" &
stuck=$!
for _ in $(seq 1 $((50 * slow))); do grep -q '"status":"loading"' <(curl -s --max-time 2 --unix-socket "$work/stuck.sock" http://moed/health) && break; sleep 0.1; done
kill -TERM "$stuck"
for _ in $(seq 1 $((30 * slow))); do kill -0 "$stuck" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$stuck" 2>/dev/null; then
  kill -9 "$stuck"
  fail "SIGTERM while loading waited for the load; log: $(cat "$work/stuck.log")"
else
  wait "$stuck"
  rc=$?
  [[ $rc -eq 0 && ! -e $work/stuck.sock ]] && grep -q "stopped while loading" "$work/stuck.log" && pass "SIGTERM while loading stops at once, exit 0" || fail "SIGTERM while loading (rc=$rc): $(cat "$work/stuck.log")"
fi

# Bad config: the key's path in the message, exit 1.
printf 'limits:\n  max_batch: many\n' >"$work/bad.yaml"
"$moed" --config "$work/bad.yaml" --model "$models/tiny-f32" 2>"$work/err"
[[ $? -eq 1 ]] && grep -q "limits.max_batch" "$work/err" && pass "bad config value names the key" || fail "bad config: $(cat "$work/err")"
printf 'listen:\n  cors_origins: ["http://localhost:3000/app"]\n' >"$work/bad.yaml"
"$moed" --config "$work/bad.yaml" --model "$models/tiny-f32" 2>"$work/err"
[[ $? -eq 1 ]] && grep -q "listen.cors_origins\[0\]: 'http://localhost:3000/app' is not an origin" "$work/err" && pass "a CORS origin with a path names the entry" || fail "bad CORS origin: $(cat "$work/err")"
printf 'memory:\n  budget: 1GiB\n' >"$work/bad.yaml"
"$moed" --config "$work/bad.yaml" --model "$models/tiny-f32" 2>"$work/err"
[[ $? -eq 1 ]] && grep -q "memory.budget: unknown key" "$work/err" && pass "unknown config key names the key" || fail "unknown key"

# Socket activation: systemd passes the listening socket (LISTEN_FDS).
if command -v systemd-socket-activate >/dev/null; then
  systemd-socket-activate -l "$work/act.sock" "$moed" --model "$models/tiny-f32" --socket "$work/unused.sock" 2>"$work/act.log" &
  act=$!
  ok=0
  for _ in $(seq 1 $((100 * slow))); do
    [[ $(curl -s --max-time 5 -o /dev/null -w '%{http_code}' --unix-socket "$work/act.sock" http://moed/health) == 200 ]] && { ok=1; break; }
    sleep 0.1
  done
  ((ok)) && grep -q "from systemd" "$work/act.log" && [[ ! -e $work/unused.sock ]] && pass "serves a socket passed via LISTEN_FDS" || fail "socket activation"
  kill -TERM $act; wait $act 2>/dev/null
fi

# Text the served tokenizer cannot encode is the request's fault: 400 naming the field, not 500.
strict=$work/strict-model
mkdir -p "$strict"
for f in "$models/tiny-f32"/*; do ln -s "$f" "$strict/"; done
rm "$strict/tokenizer.json"
py "
import json
t = json.load(open('$models/tiny-f32/tokenizer.json'))
t['model']['byte_fallback'] = False
t['model']['unk_token'] = None
json.dump(t, open('$strict/tokenizer.json', 'w'))
"
start_other strict "$strict"
expect "unencodable prompt" 400 '"param":"prompt"' http://moed/v1/completions -d '{"prompt": "\u6771", "max_tokens": 2}'
expect "unencodable chat message" 400 '"param":"messages"' http://moed/v1/chat/completions -d '{"messages": [{"role": "user", "content": "\u6771"}], "max_tokens": 2}'
stop_other

# Another family served: DeepSeek-V3's layer plan (MLA, group-limited sigmoid routing) answers
# a chat completion through its own chat template. Requests that count tokens decode greedily
# here, so that a sampled end of text cannot cut them short.
start_other ds "$models/tiny-deepseek_v3-bf16" --host-budget 50%
api http://moed/v1/chat/completions -d '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5, "temperature": 0}' |
  py "import json,sys; d=json.load(sys.stdin); assert d['usage']['completion_tokens'] >= 1, d" &&
  pass "serves deepseek_v3 (chat)" || { fail "deepseek_v3 daemon"; cat "$work/ds.log"; }
stop_other

# OLMoE's embedding is padded past its tokenizer (512 rows, 500 tokens), as real checkpoints
# are: the 20 most likely alternatives of a dozen tokens name padded ids, which read as no text.
start_other olmoe "$models/tiny-olmoe-bf16"
api http://moed/v1/completions -d '{"prompt": "Hello", "max_tokens": 12, "temperature": 0, "logprobs": 20}' |
  py "import json,sys; d=json.load(sys.stdin); lp=d['choices'][0]['logprobs']; assert len(lp['tokens']) == 12 and all(1 <= len(t) <= 21 for t in lp['top_logprobs']), d" &&
  pass "logprobs past a padded tokenizer" || { fail "logprobs past a padded tokenizer"; cat "$work/olmoe.log"; }
stop_other

# A GGUF file alone (quantized weights, tokenizer and chat template from its metadata) under a
# 25% budget: chat through the file's template, and a streamed completion.
start_other gguf "$models/tiny-qwen3_moe-q4_k_m.gguf" --host-budget 25%
api http://moed/v1/chat/completions -d '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5, "temperature": 0}' |
  py "import json,sys; d=json.load(sys.stdin); assert d['usage']['completion_tokens'] >= 1 and d['usage']['prompt_tokens'] > 3, d" &&
  pass "serves a q4_K_M GGUF file alone (chat)" || { fail "gguf daemon chat"; cat "$work/gguf.log"; }
api http://moed/v1/completions -d '{"prompt": "Hello world", "max_tokens": 4, "stream": true, "temperature": 0}' >"$work/gguf-stream.txt"
grep -q '^data: \[DONE\]' "$work/gguf-stream.txt" && pass "gguf daemon streams a completion" || { fail "gguf stream"; cat "$work/gguf-stream.txt"; }
stop_other

# The units verify, with ExecStart pointing at this build.
if command -v systemd-analyze >/dev/null; then
  sed "s|/usr/local/bin/moed|$moed|" "$configs/moed.service" >"$work/moed.service"
  cp "$configs/moed.socket" "$work/moed.socket"
  systemd-analyze verify "$work/moed.service" "$work/moed.socket" 2>"$work/verify.log" && pass "systemd-analyze verify" || { fail "systemd-analyze verify"; cat "$work/verify.log"; }
fi

finish
