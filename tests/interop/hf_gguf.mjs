// GGUF files read and rewritten by Hugging Face's @huggingface/gguf, a JavaScript implementation
// of the format written without reference to moed (installed by scripts/install-deps.sh).
// tests/interop/test_gguf.py compares what it reads with scripts/gguf_file.py's reader, and
// runs moed (its C++ reader) on the files it writes.
//
//   node hf_gguf.mjs dump FILE...          one JSON object per file on stdout (a JSON array)
//   node hf_gguf.mjs rewrite IN OUT KEY    OUT: IN with its header serialized again by
//                                          @huggingface/gguf, the string key KEY added, and
//                                          the tensor data copied after the new header
import { readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";

import { buildGgufHeader, gguf, GGUFValueType } from "@huggingface/gguf";

// BigInt (64-bit values, offsets) as decimal strings; everything else as JSON has it.
const plain = (value) =>
  typeof value === "bigint" ? value.toString() : Array.isArray(value) ? value.map(plain) : value;

async function parse(file) {
  return gguf(resolve(file), { typedMetadata: true, allowLocalFile: true });
}

async function dump(files) {
  const out = [];
  for (const file of files) {
    const parsed = await parse(file);
    const metadata = [];
    for (const [key, entry] of Object.entries(parsed.typedMetadata)) {
      if (key === "version" || key === "tensor_count" || key === "kv_count") continue;
      metadata.push({ key, type: entry.type, subType: entry.subType ?? null, value: plain(entry.value) });
    }
    out.push({
      file,
      version: parsed.typedMetadata.version.value,
      tensorCount: plain(parsed.typedMetadata.tensor_count.value),
      kvCount: plain(parsed.typedMetadata.kv_count.value),
      littleEndian: parsed.littleEndian,
      tensorDataOffset: plain(parsed.tensorDataOffset),
      metadata,
      tensors: parsed.tensorInfos.map((t) => ({
        name: t.name,
        shape: plain(t.shape),
        dtype: t.dtype,
        offset: plain(t.offset),
      })),
    });
  }
  process.stdout.write(JSON.stringify(out));
}

async function rewrite(input, output, key) {
  const parsed = await parse(input);
  const metadata = { ...parsed.typedMetadata };
  metadata[key] = { value: "rewritten by @huggingface/gguf", type: GGUFValueType.STRING };
  metadata.kv_count = { ...metadata.kv_count, value: metadata.kv_count.value + 1n };
  const bytes = readFileSync(input);
  const alignment = Number(parsed.metadata["general.alignment"] ?? 32);
  const header = await buildGgufHeader(new Blob([bytes]), metadata, {
    littleEndian: parsed.littleEndian,
    tensorInfoByteRange: parsed.tensorInfoByteRange,
    alignment,
  });
  const data = bytes.subarray(Number(parsed.tensorDataOffset));
  writeFileSync(output, Buffer.concat([Buffer.from(await header.arrayBuffer()), data]));
}

const [command, ...args] = process.argv.slice(2);
try {
  if (command === "dump" && args.length > 0) await dump(args);
  else if (command === "rewrite" && args.length === 3) await rewrite(...args);
  else {
    process.stderr.write("usage: hf_gguf.mjs dump FILE... | rewrite IN OUT KEY\n");
    process.exit(2);
  }
} catch (error) {
  process.stderr.write(`hf_gguf.mjs ${command}: ${error.stack ?? error}\n`);
  process.exit(1);
}
