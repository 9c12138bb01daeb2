// OpenAI's own client library (the `openai` npm package, pinned in package-lock.json) against a
// running moed: every call a user of that library would make on the routes moed serves, checked
// as the library hands the answers back. tests/interop/test_openai.py starts the daemon.
//
//   node openai_client.mjs BASE_URL MODEL_ID [--tools | --tool-choice]
// prints "ok NAME" per check; exits 1 at the first that fails. --tools runs the checks of a
// conversation with tool calls instead (for a model whose chat template takes them),
// --tool-choice those of tool_choice (for a model whose template renders the tools).
import assert from "node:assert/strict";

import OpenAI from "openai";

const [baseURL, model, mode] = process.argv.slice(2);
if (!baseURL || !model || (mode !== undefined && mode !== "--tools" && mode !== "--tool-choice")) {
  process.stderr.write("usage: openai_client.mjs BASE_URL MODEL_ID [--tools | --tool-choice]\n");
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 60_000 });
const prompt = "The capital of France is";
const messages = [{ role: "user", content: "Tell me a story" }];

async function check(name, body) {
  await body();
  process.stdout.write(`ok ${name}\n`);
}

async function collect(stream, pick) {
  let text = "";
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    text += pick(chunk) ?? "";
  }
  return { text, chunks };
}

const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

const clock = {
  type: "function",
  function: { name: "get_time", description: "The time now", parameters: { type: "object" } },
};

// A strict tool: its arguments follow its parameters.
const booking = {
  type: "function",
  function: {
    name: "book_table",
    strict: true,
    parameters: {
      type: "object",
      properties: {
        seats: { type: "integer" },
        area: { enum: ["inside", "terrace"] },
        note: { anyOf: [{ type: "string", maxLength: 8 }, { type: "null" }] },
      },
      required: ["seats", "area", "note"],
      additionalProperties: false,
    },
  },
};

// The arguments a call to book_table may have, as its schema says.
function assertBooking(args) {
  assert.deepEqual(Object.keys(args), ["seats", "area", "note"]);
  assert.ok(Number.isInteger(args.seats), JSON.stringify(args));
  assert.ok(["inside", "terrace"].includes(args.area), JSON.stringify(args));
  assert.ok(args.note === null || (typeof args.note === "string" && [...args.note].length <= 8),
    JSON.stringify(args));
}

// tool_choice "required" and a named tool: the answer is a call, in the template's syntax, to an
// offered tool (the named one), with a JSON object of arguments, streamed or not; a strict
// tool's arguments follow its parameters.
async function forcedCallChecks() {
  await check("tool_choice required or named forces a call", async () => {
    const question = { role: "user", content: "What is the weather in Paris?" };
    let called = 0;
    for (const [seed, toolChoice] of [[1, "required"], [2, "required"],
      [3, { type: "function", function: { name: "get_time" } }],
      [4, { type: "function", function: { name: "get_time" } }]]) {
      const request = {
        model, messages: [question], tools: [weather, clock], tool_choice: toolChoice,
        max_tokens: 96, temperature: 1, seed,
      };
      const answer = await client.chat.completions.create(request);
      const choice = answer.choices[0];
      if (choice.finish_reason === "length") continue;  // a tiny random model may ramble
      // As OpenAI answers: "tool_calls" for "required", "stop" for a named tool.
      assert.equal(choice.finish_reason, toolChoice === "required" ? "tool_calls" : "stop",
        JSON.stringify(choice));
      assert.equal(choice.message.content, null);
      assert.equal(choice.message.tool_calls.length, 1);
      const call = choice.message.tool_calls[0].function;
      if (toolChoice === "required") assert.ok(["get_weather", "get_time"].includes(call.name));
      else assert.equal(call.name, "get_time");
      const args = JSON.parse(call.arguments);
      assert.ok(typeof args === "object" && args !== null && !Array.isArray(args), call.arguments);
      const { chunks } = await collect(
        await client.chat.completions.create({ ...request, stream: true }), () => "");
      const streamed = chunks.flatMap((chunk) => chunk.choices[0]?.delta?.tool_calls ?? []);
      assert.equal(streamed.length, 1);
      assert.equal(streamed[0].function.name, call.name);
      assert.equal(streamed[0].function.arguments, call.arguments);
      assert.equal(chunks.at(-1).choices[0]?.finish_reason ?? chunks.at(-2).choices[0].finish_reason,
        choice.finish_reason);
      called += 1;
    }
    assert.ok(called >= 1, "no answer finished its call within 96 tokens");
  });

  await check("a forced call to a strict tool has arguments its parameters admit", async () => {
    const question = { role: "user", content: "Book a table for two." };
    let called = 0;
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const answer = await client.chat.completions.create({
        model, messages: [question], tools: [weather, booking], max_tokens: 128, temperature: 1,
        seed, tool_choice: { type: "function", function: { name: "book_table" } },
      });
      const choice = answer.choices[0];
      if (choice.finish_reason === "length") continue;
      const call = choice.message.tool_calls[0].function;
      assert.equal(call.name, "book_table");
      assertBooking(JSON.parse(call.arguments));
      called += 1;
    }
    assert.ok(called >= 1, "no answer finished its call within 128 tokens");
  });
}

async function toolChecks() {
  const question = { role: "user", content: "What is the weather in Paris?" };
  const asked = await client.chat.completions.create({
    model, messages: [question], tools: [weather], max_tokens: 2, temperature: 0,
  });
  await check("tools offered, an answer without a call is content", async () => {
    // The model's calls are parsed out in its template's syntax; this tiny model writes none.
    const message = asked.choices[0].message;
    assert.equal(typeof message.content, "string");
    assert.equal(message.tool_calls, undefined);
    assert.equal(asked.choices[0].finish_reason, "length");
    const { text, chunks } = await collect(await client.chat.completions.create({
      model, messages: [question], tools: [weather], max_tokens: 2, temperature: 0, stream: true,
    }), (chunk) => chunk.choices[0]?.delta?.content);
    assert.equal(text, message.content);
    assert.ok(chunks.every((chunk) => !chunk.choices[0]?.delta?.tool_calls));
    assert.equal(chunks.at(-1).choices[0].finish_reason, "length");
  });
  await check("chat with tool calls and their results in the history", async () => {
    const answer = await client.chat.completions.create({
      model,
      tools: [weather],
      max_tokens: 4,
      temperature: 0,
      messages: [
        question,
        // As the library builds an assistant turn that called a tool: no content.
        {
          role: "assistant",
          tool_calls: [{
            id: "call_1", type: "function",
            function: { name: "get_weather", arguments: JSON.stringify({ city: "Paris" }) },
          }],
        },
        { role: "tool", tool_call_id: "call_1", content: "Sunny, 21 C" },
      ],
    });
    assert.equal(answer.choices[0].message.role, "assistant");
    assert.equal(answer.usage.completion_tokens, 4);
    // The call and its result reached the template: the prompt grew by them.
    assert.ok(answer.usage.prompt_tokens > asked.usage.prompt_tokens + 10,
      `${answer.usage.prompt_tokens} prompt tokens against ${asked.usage.prompt_tokens}`);
  });
  await forcedCallChecks();
}

async function toolChoiceChecks() {
  const question = { role: "user", content: "What is the weather in Paris?" };
  await check("tool_choice none keeps the tools from the prompt", async () => {
    const ask = (extra) => client.chat.completions.create({
      model, messages: [question], max_tokens: 1, temperature: 0, ...extra,
    });
    const without = await ask({});
    const auto = await ask({ tools: [weather], tool_choice: "auto" });
    const none = await ask({ tools: [weather], tool_choice: "none" });
    assert.ok(auto.usage.prompt_tokens > without.usage.prompt_tokens + 10,
      `${auto.usage.prompt_tokens} prompt tokens with the tools, ${without.usage.prompt_tokens} without`);
    assert.equal(none.usage.prompt_tokens, without.usage.prompt_tokens);
  });
  await check("an answer's calls sent back with content null render", async () => {
    // As the library's runTools loop sends an assistant message with tool_calls back: Qwen3's
    // first template tests '</think>' in its content, which moed gives "" rather than null.
    const answer = await client.chat.completions.create({
      model, tools: [weather], max_tokens: 1, temperature: 0,
      messages: [
        question,
        {
          role: "assistant", content: null,
          tool_calls: [{
            id: "call_AbCdEf123", type: "function",
            function: { name: "get_weather", arguments: JSON.stringify({ city: "Paris" }) },
          }],
        },
        { role: "tool", tool_call_id: "call_AbCdEf123", content: "Sunny, 21 C" },
      ],
    });
    assert.equal(answer.choices[0].message.role, "assistant");
  });
  await forcedCallChecks();
}

async function basicChecks() {
  await check("models.list", async () => {
    const ids = [];
    for await (const entry of client.models.list()) ids.push(entry.id);
    assert.deepEqual(ids, [model]);
  });

  await check("models.retrieve, and an unknown model as NotFoundError", async () => {
    const entry = await client.models.retrieve(model);
    assert.equal(entry.id, model);
    await assert.rejects(client.models.retrieve("no-such-model"), (error) => {
      assert.ok(error instanceof OpenAI.NotFoundError, String(error));
      assert.equal(error.code, "model_not_found");
      return true;
    });
  });

  let greedy;
  await check("completions.create", async () => {
    const answer = await client.completions.create({ model, prompt, max_tokens: 8, temperature: 0 });
    assert.equal(answer.object, "text_completion");
    assert.equal(answer.choices.length, 1);
    greedy = answer.choices[0].text;
    assert.equal(typeof greedy, "string");
    assert.equal(answer.choices[0].finish_reason, "length");
    assert.equal(answer.usage.completion_tokens, 8);
    assert.equal(answer.usage.total_tokens, answer.usage.prompt_tokens + 8);
  });

  await check("completions.create stream", async () => {
    const stream = await client.completions.create({
      model, prompt, max_tokens: 8, temperature: 0, stream: true,
    });
    const { text, chunks } = await collect(stream, (c) => c.choices[0]?.text);
    assert.equal(text, greedy);
    assert.equal(chunks.at(-1).choices[0].finish_reason, "length");
  });

  await check("completions.create stop", async () => {
    const stop = greedy.slice(Math.floor(greedy.length / 2)).trim().slice(0, 3);
    assert.ok(stop.length > 0, `no stop string in ${JSON.stringify(greedy)}`);
    const answer = await client.completions.create({
      model, prompt, max_tokens: 8, temperature: 0, stop: [stop],
    });
    assert.equal(answer.choices[0].finish_reason, "stop");
    assert.equal(answer.choices[0].text, greedy.slice(0, greedy.indexOf(stop)));
  });

  let reply;
  await check("chat.completions.create", async () => {
    const answer = await client.chat.completions.create({
      model, messages, max_tokens: 10, temperature: 0.8, seed: 7,
    });
    assert.equal(answer.object, "chat.completion");
    assert.equal(answer.choices[0].message.role, "assistant");
    reply = answer.choices[0].message.content;
    assert.equal(typeof reply, "string");
    assert.ok(["length", "stop"].includes(answer.choices[0].finish_reason));
  });

  await check("chat.completions.create stream, same seed", async () => {
    const stream = await client.chat.completions.create({
      model, messages, max_tokens: 10, temperature: 0.8, seed: 7, stream: true,
    });
    const { text, chunks } = await collect(stream, (c) => c.choices[0]?.delta?.content);
    assert.equal(text, reply);
    assert.equal(chunks[0].object, "chat.completion.chunk");
    assert.ok(["length", "stop"].includes(chunks.at(-1).choices[0].finish_reason));
  });

  await check("chat stream with stream_options.include_usage", async () => {
    const stream = await client.chat.completions.create({
      model, messages, max_tokens: 10, temperature: 0.8, seed: 7, stream: true,
      stream_options: { include_usage: true },
    });
    const { text, chunks } = await collect(stream, (c) => c.choices[0]?.delta?.content);
    assert.equal(text, reply);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.ok(last.usage.completion_tokens >= 1 && last.usage.completion_tokens <= 10);
    assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
    assert.ok(chunks.slice(0, -1).every((c) => c.usage === null));
  });

  await check("chat.completions.stream helper", async () => {
    const runner = client.chat.completions.stream({
      model, messages, max_tokens: 10, temperature: 0.8, seed: 7,
    });
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0].message.content, reply);
  });

  await check("chat logprobs", async () => {
    const answer = await client.chat.completions.create({
      model, messages, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2,
    });
    const entries = answer.choices[0].logprobs.content;
    assert.equal(entries.length, answer.usage.completion_tokens);
    for (const entry of entries) {
      assert.ok(entry.logprob <= 0);
      assert.equal(entry.top_logprobs.length, 2);
      assert.ok(entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob);
    }
  });

  await check("bad request is a BadRequestError naming the field", async () => {
    await assert.rejects(
      client.completions.create({ model, prompt, max_tokens: 4, temperature: -1 }),
      (error) => {
        assert.ok(error instanceof OpenAI.BadRequestError, String(error));
        assert.equal(error.status, 400);
        assert.match(error.message, /temperature/);
        return true;
      },
    );
  });

  await check("response_format json_object: answers that end parse as objects", async () => {
    let ended = 0;
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const answer = await client.chat.completions.create({
        model, messages, max_tokens: 64, temperature: 1, seed,
        response_format: { type: "json_object" },
      });
      const choice = answer.choices[0];
      if (choice.finish_reason !== "stop") continue;
      const value = JSON.parse(choice.message.content);
      assert.equal(typeof value, "object");
      assert.ok(value !== null && !Array.isArray(value), choice.message.content);
      ended += 1;
    }
    assert.ok(ended >= 1, "no answer closed its object within 64 tokens");
  });

  await check("response_format json_schema: answers that end are instances, streamed alike",
    async () => {
      let ended = 0;
      for (const seed of [1, 2, 3, 4, 5, 6]) {
        const request = {
          model, messages, max_tokens: 128, temperature: 1, seed,
          response_format: { type: "json_schema", json_schema: { name: "booking", strict: true,
            schema: booking.function.parameters } },
        };
        const answer = await client.chat.completions.create(request);
        const choice = answer.choices[0];
        if (choice.finish_reason !== "stop") continue;
        assertBooking(JSON.parse(choice.message.content));
        if (ended === 0) {
          const { text } = await collect(await client.chat.completions.create(
            { ...request, stream: true }), (chunk) => chunk.choices[0]?.delta?.content);
          assert.equal(text, choice.message.content);
        }
        ended += 1;
      }
      assert.ok(ended >= 1, "no answer ended within 128 tokens");
    });

  await check("what moed cannot enforce is a BadRequestError naming the keyword", async () => {
    await assert.rejects(
      client.chat.completions.create({
        model, messages, max_tokens: 4,
        response_format: { type: "json_schema", json_schema: { name: "story", strict: true,
          schema: { type: "object", properties: { words: { type: "array", uniqueItems: true } } } } },
      }),
      (error) => {
        assert.ok(error instanceof OpenAI.BadRequestError, String(error));
        assert.equal(error.param, "response_format.json_schema.schema/properties/words/uniqueItems");
        return true;
      },
    );
  });

  await check("a limit past the context is context_length_exceeded", async () => {
    await assert.rejects(
      client.completions.create({ model, prompt, max_tokens: 100_000_000 }),
      (error) => {
        assert.ok(error instanceof OpenAI.BadRequestError, String(error));
        assert.equal(error.code, "context_length_exceeded");
        assert.equal(error.param, "max_tokens");
        return true;
      },
    );
  });

  await check("logit_bias steers the draw, logprobs stay the model's", async () => {
    const answer = await client.completions.create({
      model, prompt, max_tokens: 3, temperature: 0, logprobs: 1, logit_bias: { 17: 100 },
    });
    const { tokens, token_logprobs: logprobs } = answer.choices[0].logprobs;
    assert.equal(new Set(tokens).size, 1, JSON.stringify(tokens));
    assert.ok(logprobs.every((lp) => lp < -0.01), JSON.stringify(logprobs));
  });

  await check("a stream abandoned midway, then another request", async () => {
    // Greedy "Once" runs 3000 tokens without an EOS on the tiny model: only a cancel ends it
    // early, which the test then sees in the daemon's metrics.
    const stream = await client.completions.create({
      model, prompt: "Once", max_tokens: 3000, temperature: 0, stream: true,
    });
    for await (const chunk of stream) {
      assert.equal(typeof chunk.choices[0].text, "string");
      break;  // leaving the loop aborts the request
    }
    const answer = await client.completions.create({ model, prompt, max_tokens: 8, temperature: 0 });
    assert.equal(answer.choices[0].text, greedy);
  });
}

try {
  if (mode === "--tools") await toolChecks();
  else if (mode === "--tool-choice") await toolChoiceChecks();
  else await basicChecks();
} catch (error) {
  process.stderr.write(`openai_client.mjs: ${error.stack ?? error}\n`);
  process.exit(1);
}
