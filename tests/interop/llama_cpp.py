"""llama.cpp itself, through its C API (include/llama.h) with ctypes: the libraries prebuilt by
the npm package @node-llama-cpp/linux-x64 (pinned in package.json; libllama, libggml and one
libggml-cpu per x86 generation, chosen at run time). The structures below are transcribed from
llama.h at the commit those libraries were built from (LLAMA_COMMIT, checked on load): a new
package version needs them compared with its llama.h again.

What the tests use: loading a GGUF file (tensors validated), tokenizing and detokenizing with its
vocabulary, the logits of every position of one batch, llama-quantize's quantizer and the model
saver;
scripts/bench-llamacpp.py times llama.cpp's prefill and decode."""
import contextlib
import ctypes as C
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LIB_DIR = os.path.join(HERE, "node_modules", "@node-llama-cpp", "linux-x64", "bins", "linux-x64")
TRANSCRIBED_FROM = b"0ad4a86"

# enum llama_ftype: llama-quantize's file types.
FTYPES = {"f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10,
          "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16,
          "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25, "iq3_s": 26, "iq3_m": 27, "iq4_xs": 30,
          "bf16": 32, "tq1_0": 36}
GGML_TYPE_F32 = 0
LLAMA_FLASH_ATTN_TYPE_DISABLED = 0


class ModelParams(C.Structure):
    _fields_ = [("devices", C.c_void_p), ("tensor_buft_overrides", C.c_void_p),
                ("n_gpu_layers", C.c_int32), ("split_mode", C.c_int), ("load_mode", C.c_int),
                ("lazy_mode", C.c_int), ("main_gpu", C.c_int32), ("tensor_split", C.c_void_p),
                ("progress_callback", C.c_void_p), ("progress_callback_user_data", C.c_void_p),
                ("kv_overrides", C.c_void_p), ("vocab_only", C.c_bool),
                ("check_tensors", C.c_bool), ("use_extra_bufts", C.c_bool), ("no_host", C.c_bool),
                ("no_alloc", C.c_bool), ("load_mtp", C.c_bool)]


class ContextParams(C.Structure):
    _fields_ = [("n_ctx", C.c_uint32), ("n_batch", C.c_uint32), ("n_ubatch", C.c_uint32),
                ("n_seq_max", C.c_uint32), ("n_rs_seq", C.c_uint32),
                ("n_outputs_max", C.c_uint32), ("n_outputs_max_per_seq", C.c_uint32),
                ("n_threads", C.c_int32), ("n_threads_batch", C.c_int32),
                ("ctx_type", C.c_int), ("rope_scaling_type", C.c_int),
                ("pooling_type", C.c_int), ("attention_type", C.c_int),
                ("flash_attn_type", C.c_int), ("rope_freq_base", C.c_float),
                ("rope_freq_scale", C.c_float), ("yarn_ext_factor", C.c_float),
                ("yarn_attn_factor", C.c_float), ("yarn_beta_fast", C.c_float),
                ("yarn_beta_slow", C.c_float), ("yarn_orig_ctx", C.c_uint32),
                ("defrag_thold", C.c_float), ("cb_eval", C.c_void_p),
                ("cb_eval_user_data", C.c_void_p), ("type_k", C.c_int), ("type_v", C.c_int),
                ("abort_callback", C.c_void_p), ("abort_callback_data", C.c_void_p),
                ("embeddings", C.c_bool), ("offload_kqv", C.c_bool), ("no_perf", C.c_bool),
                ("op_offload", C.c_bool), ("swa_full", C.c_bool), ("kv_unified", C.c_bool),
                ("samplers", C.c_void_p), ("n_samplers", C.c_size_t), ("ctx_other", C.c_void_p)]


class QuantizeParams(C.Structure):
    _fields_ = [("nthread", C.c_int32), ("ftype", C.c_int), ("output_tensor_type", C.c_int),
                ("token_embedding_type", C.c_int), ("allow_requantize", C.c_bool),
                ("quantize_output_tensor", C.c_bool), ("only_copy", C.c_bool),
                ("pure", C.c_bool), ("keep_split", C.c_bool), ("dry_run", C.c_bool),
                ("imatrix", C.c_void_p), ("kv_overrides", C.c_void_p),
                ("tt_overrides", C.c_void_p), ("prune_layers", C.c_void_p),
                ("max_buf_size", C.c_size_t)]


class TensorTypeOverride(C.Structure):  # struct llama_model_tensor_override
    _fields_ = [("pattern", C.c_char_p), ("type", C.c_int)]


class Batch(C.Structure):
    _fields_ = [("n_tokens", C.c_int32), ("token", C.POINTER(C.c_int32)),
                ("embd", C.POINTER(C.c_float)), ("pos", C.POINTER(C.c_int32)),
                ("n_seq_id", C.POINTER(C.c_int32)),
                ("seq_id", C.POINTER(C.POINTER(C.c_int32))), ("logits", C.POINTER(C.c_int8))]


LogCallback = C.CFUNCTYPE(None, C.c_int, C.c_char_p, C.c_void_p)


class LlamaCpp:
    """The loaded libraries. llama.cpp's log goes to `log` (kept, for a failure's message)."""

    def __init__(self):
        if not os.path.isdir(LIB_DIR):
            raise RuntimeError("%s is missing (run scripts/install-deps.sh)" % LIB_DIR)
        common = C.CDLL(os.path.join(LIB_DIR, "libllama-common.so"))
        commit = C.c_char_p.in_dll(common, "LLAMA_COMMIT").value
        if commit != TRANSCRIBED_FROM:
            raise RuntimeError("llama.cpp %s: llama_cpp.py's structures are transcribed from %s's "
                               "llama.h; compare them with this version's" % (commit, TRANSCRIBED_FROM))
        self.ggml = C.CDLL(os.path.join(LIB_DIR, "libggml.v0.5.0.so"), mode=C.RTLD_GLOBAL)
        self.lib = C.CDLL(os.path.join(LIB_DIR, "libllama.v0.5.0.so"), mode=C.RTLD_GLOBAL)
        self.log = []
        self._log_callback = LogCallback(lambda level, text, data: self.log.append(text))
        self._fn("llama_log_set", None, LogCallback, C.c_void_p)(self._log_callback, None)
        self.ggml.ggml_log_set.argtypes = [LogCallback, C.c_void_p]
        self.ggml.ggml_log_set(self._log_callback, None)
        self.ggml.ggml_backend_load_all_from_path.argtypes = [C.c_char_p]
        self.ggml.ggml_backend_load_all_from_path(LIB_DIR.encode())
        self._fn("llama_backend_init", None)()
        self.model_default = self._fn("llama_model_default_params", ModelParams)
        self.context_default = self._fn("llama_context_default_params", ContextParams)
        self.load_model = self._fn("llama_model_load_from_file", C.c_void_p, C.c_char_p,
                                   ModelParams)
        self.free_model = self._fn("llama_model_free", None, C.c_void_p)
        self.new_context = self._fn("llama_init_from_model", C.c_void_p, C.c_void_p,
                                    ContextParams)
        self.free_context = self._fn("llama_free", None, C.c_void_p)
        self.model_vocab = self._fn("llama_model_get_vocab", C.c_void_p, C.c_void_p)
        self.vocab_size = self._fn("llama_vocab_n_tokens", C.c_int32, C.c_void_p)
        self.tokenize_ = self._fn("llama_tokenize", C.c_int32, C.c_void_p, C.c_char_p, C.c_int32,
                                  C.POINTER(C.c_int32), C.c_int32, C.c_bool, C.c_bool)
        self.detokenize_ = self._fn("llama_detokenize", C.c_int32, C.c_void_p,
                                    C.POINTER(C.c_int32), C.c_int32, C.c_char_p, C.c_int32,
                                    C.c_bool, C.c_bool)
        self.batch_init = self._fn("llama_batch_init", Batch, C.c_int32, C.c_int32, C.c_int32)
        self.batch_free = self._fn("llama_batch_free", None, Batch)
        self.decode = self._fn("llama_decode", C.c_int32, C.c_void_p, Batch)
        self.logits_of = self._fn("llama_get_logits_ith", C.POINTER(C.c_float), C.c_void_p,
                                  C.c_int32)
        self.save_model = self._fn("llama_model_save_to_file", None, C.c_void_p, C.c_char_p)
        self.memory_of = self._fn("llama_get_memory", C.c_void_p, C.c_void_p)
        self.memory_clear = self._fn("llama_memory_clear", None, C.c_void_p, C.c_bool)
        self.quantize_default = self._fn("llama_model_quantize_default_params", QuantizeParams)
        self.quantize_ = self._fn("llama_model_quantize", C.c_uint32, C.c_char_p, C.c_char_p,
                                  C.POINTER(QuantizeParams))

    def _fn(self, name, result, *args):
        f = getattr(self.lib, name)
        f.restype = result
        f.argtypes = list(args)
        return f

    def _load(self, path, vocab_only, repack=True):
        params = self.model_default()
        params.n_gpu_layers = 0
        params.vocab_only = vocab_only
        params.use_extra_bufts = repack
        params.check_tensors = not vocab_only  # llama.cpp validates every tensor's data
        del self.log[:]
        model = self.load_model(path.encode(), params)
        if not model:
            raise RuntimeError("llama.cpp cannot load %s:\n%s" % (path, self.log_tail()))
        return model

    def log_tail(self, lines=8):
        return "".join(t.decode(errors="replace") for t in self.log[-lines:])

    def tokenize(self, path, texts, add_special, parse_special=True):
        """Each text's ids under path's vocabulary."""
        model = self._load(path, vocab_only=True)
        try:
            vocab = self.model_vocab(model)
            out = []
            for text in texts:
                data = text.encode()
                ids = (C.c_int32 * (len(data) + 8))()
                n = self.tokenize_(vocab, data, len(data), ids, len(ids), add_special,
                                   parse_special)
                if n < 0:
                    raise RuntimeError("llama_tokenize %r: %d" % (text, n))
                out.append(list(ids[:n]))
            return out
        finally:
            self.free_model(model)

    def detokenize(self, path, sequences):
        """Each sequence's text, special tokens written out (remove_special and unparse_special
        as a server's decoding of a whole sequence)."""
        model = self._load(path, vocab_only=True)
        try:
            vocab = self.model_vocab(model)
            out = []
            for ids in sequences:
                tokens = (C.c_int32 * max(1, len(ids)))(*ids)
                size = 64 + 64 * len(ids)
                text = C.create_string_buffer(size)
                n = self.detokenize_(vocab, tokens, len(ids), text, size, False, True)
                if n < 0:
                    raise RuntimeError("llama_detokenize %r: %d" % (ids, n))
                out.append(text.raw[:n].decode(errors="replace"))
            return out
        finally:
            self.free_model(model)

    @contextlib.contextmanager
    def _session(self, path, positions, batch_tokens, threads, exact):
        """A model, a context for `positions` and batches of up to batch_tokens, and the
        vocabulary size; exact: an f32 KV cache, no flash attention (the attention itself in f32,
        as moed's f32 cache) and ggml's plain kernels rather than the repacked ones it picks by
        CPU generation, else llama.cpp's defaults (f16 cache, flash attention when it helps,
        repacked kernels)."""
        model = self._load(path, vocab_only=False, repack=not exact)
        context = None
        batch = None
        try:
            params = self.context_default()
            params.n_ctx = max(64, positions)
            params.n_batch = params.n_ubatch = batch_tokens
            params.n_threads = params.n_threads_batch = threads
            if exact:
                params.type_k = params.type_v = GGML_TYPE_F32
                params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED
            context = self.new_context(model, params)
            if not context:
                raise RuntimeError("llama.cpp: no context for %s:\n%s" % (path, self.log_tail()))
            batch = self.batch_init(batch_tokens, 0, 1)
            yield context, batch, self.vocab_size(self.model_vocab(model))
        finally:
            if batch is not None:
                self.batch_free(batch)
            if context:
                self.free_context(context)
            self.free_model(model)

    def logits(self, path, tokens, threads=2):
        """[len(tokens), vocab] logits of one batch from position 0, computed exactly (see
        _session)."""
        with self._session(path, len(tokens), len(tokens), threads,
                           exact=True) as (context, batch, vocab):
            self._decode_at(context, batch, tokens, 0, every_output=True)
            return np.array([np.ctypeslib.as_array(self.logits_of(context, i), (vocab,))
                             for i in range(len(tokens))])

    def time_generation(self, path, prompt_tokens, decode_steps, threads, rounds):
        """Seconds of each round's prefill of prompt_tokens ids (one batch, spread over the
        vocabulary) and of decode_steps greedy steps after it (one token per llama_decode), with
        llama.cpp's defaults; the cache is cleared between rounds."""
        with self._session(path, prompt_tokens + decode_steps, prompt_tokens, threads,
                           exact=False) as (context, batch, vocab):
            prompt = [1 + (7919 * i) % (vocab - 1) for i in range(prompt_tokens)]
            times = []
            for _ in range(rounds):
                self.memory_clear(self.memory_of(context), True)
                start = time.perf_counter()
                self._decode_at(context, batch, prompt, 0)
                prefilled = time.perf_counter()
                token = self._argmax(context, len(prompt) - 1, vocab)
                for step in range(decode_steps):
                    self._decode_at(context, batch, [token], len(prompt) + step)
                    token = self._argmax(context, 0, vocab)
                times.append((prefilled - start, time.perf_counter() - prefilled))
            return times

    def _decode_at(self, context, batch, tokens, first_position, every_output=False):
        """Decodes tokens at positions first_position...; the logits of every one, or of the
        last."""
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = first_position + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = every_output or i == len(tokens) - 1
        batch.n_tokens = len(tokens)
        status = self.decode(context, batch)
        if status != 0:
            raise RuntimeError("llama_decode: %d\n%s" % (status, self.log_tail()))

    def _argmax(self, context, output, vocab):
        return int(np.ctypeslib.as_array(self.logits_of(context, output), (vocab,)).argmax())

    def resave(self, path, out):
        """path loaded and written again by llama.cpp's own model saver (llama-model-saver.cpp):
        its GGUF writer, and every hyperparameter key it knows, in its own layout. Loaded without
        the repacked CPU buffers, which the saver cannot read back."""
        model = self._load(path, vocab_only=False, repack=False)
        try:
            self.save_model(model, out.encode())
        finally:
            self.free_model(model)

    def quantize_rows(self, type_id, x):
        """The rows of x (float32 [rows, cols]) quantized to ggml type type_id by ggml's own
        quantizer (ggml_quantize_chunk), as the bytes a GGUF file holds. A type that needs an
        importance matrix (IQ1_S, IQ2_XXS, IQ2_XS) is given one that weighs every column alike."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows, cols = x.shape
        self.ggml.ggml_quantize_requires_imatrix.restype = C.c_bool
        self.ggml.ggml_quantize_requires_imatrix.argtypes = [C.c_int]
        importance = np.ones(cols, dtype=np.float32)
        weights = (importance.ctypes.data if self.ggml.ggml_quantize_requires_imatrix(type_id)
                   else None)
        self.ggml.ggml_row_size.restype = C.c_size_t
        self.ggml.ggml_row_size.argtypes = [C.c_int, C.c_int64]
        out = C.create_string_buffer(rows * self.ggml.ggml_row_size(type_id, cols))
        self.ggml.ggml_quantize_chunk.restype = C.c_size_t
        self.ggml.ggml_quantize_chunk.argtypes = [C.c_int, C.c_void_p, C.c_void_p, C.c_int64,
                                                  C.c_int64, C.c_int64, C.c_void_p]
        written = self.ggml.ggml_quantize_chunk(type_id, x.ctypes.data, out, 0, rows, cols,
                                                weights)
        return out.raw[:written]

    def quantize(self, source, out, ftype, keep_f32=()):
        """llama-quantize source into out as ftype (a FTYPES name); tensors whose names match a
        regex of keep_f32 stay f32 (llama-quantize's --tensor-type)."""
        params = self.quantize_default()
        params.ftype = FTYPES[ftype]
        params.nthread = 2
        overrides = (TensorTypeOverride * (len(keep_f32) + 1))()
        for override, pattern in zip(overrides, keep_f32):
            override.pattern = pattern.encode()
            override.type = GGML_TYPE_F32
        params.tt_overrides = C.cast(overrides, C.c_void_p)
        del self.log[:]
        if self.quantize_(source.encode(), out.encode(), C.byref(params)) != 0:
            raise RuntimeError("llama.cpp cannot quantize %s to %s:\n%s"
                               % (source, ftype, self.log_tail()))
