#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace moed::model {

class UnicodeRegex;
class GgufMetadata;

// Text the tokenizer cannot encode: a piece outside its vocabulary when it has neither byte
// fallback nor an unk token. The text's fault, not the tokenizer's.
class UnencodableText : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A Hugging Face tokenizer.json with a BPE model: SentencePiece-style (Metaspace or Prepend/
// Replace normalizers, byte fallback; Llama, Mistral, Mixtral) and byte-level (GPT-2's split,
// or Split pre-tokenizers with their own Unicode regexes, alone or in a Sequence: Qwen2/3,
// Llama 3, DeepSeek-V3; GPT-2, OLMoE, GPT-NeoX). NFC/NFD/NFKC/NFKD normalizers run through ICU.
// Added tokens are matched in the input before the model runs;
// the post-processor's template adds special tokens such as BOS. Unsupported parts of a
// tokenizer.json are rejected at load with the JSON path at fault, never silently ignored.
// The same machinery also runs a GGUF file's tokenizer.ggml.* vocabulary (from_gguf).
class Tokenizer {
 public:
  // Reads DIR/tokenizer.json and, if present, DIR/tokenizer_config.json (EOS, chat template).
  static Tokenizer from_model_dir(const std::filesystem::path& model_dir);
  static Tokenizer from_json(std::string_view tokenizer_json, std::string_view config_json = {},
                             const std::string& origin = "tokenizer.json");
  // A GGUF file's tokenizer, read as llama.cpp's llama-vocab.cpp reads tokenizer.ggml.*:
  // "llama" (SentencePiece: pieces merged by score, <0xNN> byte fallback, spaces as U+2581) or
  // "gpt2" (byte-level BPE over tokenizer.ggml.merges, split by the regexes
  // tokenizer.ggml.pre names). Control, user-defined and unknown tokens are matched in the
  // text as added tokens; tokenizer.chat_template is the chat template. origin (the file name)
  // and the key at fault head every error.
  static Tokenizer from_gguf(const GgufMetadata& metadata, const std::string& origin);

  // Throws UnencodableText for text this vocabulary cannot express.
  std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Ids without a token (models pad their vocabulary past the tokenizer's) give no text.
  // Special tokens in `kept_special` stay in the text when the others are skipped (as
  // llama-server's preserved tokens: a tool-call syntax's markers).
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens = true,
                     std::span<const std::int32_t> kept_special = {}) const;

  // The bytes token `id` adds to a text after other tokens, where no decoder drops a leading
  // space: a byte-fallback token's raw byte (decode gives U+FFFD for a lone byte that is not
  // UTF-8), an added token's content. What a constraint on the generated text checks each
  // candidate against. Empty for ids without a token.
  std::string token_bytes(std::int32_t id) const;

  std::int64_t vocab_size() const { return static_cast<std::int64_t>(id_to_token_.size()); }
  std::optional<std::int32_t> token_id(std::string_view token) const;
  // The vocabulary's string for an id (e.g. "▁Paris"), as tokenizers' id_to_token gives it.
  const std::string& token_string(std::int32_t id) const {
    return id_to_token_.at(static_cast<std::size_t>(id));
  }
  bool is_special(std::int32_t id) const;
  // The pieces the normalizer and pre-tokenizers cut a text (without added tokens) into, before
  // BPE: what tokenizers' pre_tokenizer.pre_tokenize_str gives (byte-level pieces mapped).
  std::vector<std::string> pre_tokenize(std::string_view text) const;
  // EOS from tokenizer_config.json's eos_token (or a GGUF's tokenizer.ggml.eos_token_id), if it
  // names a known token.
  std::optional<std::int32_t> eos_id() const { return eos_id_; }
  std::optional<std::int32_t> bos_id() const { return bos_id_; }
  // The ids that end generation: for a GGUF, llama.cpp's end-of-generation set (EOS, the
  // eot/eom/FIM-pad/repo/file-separator ids, and tokens such as <|im_end|> and <|eot_id|> found
  // by their text); for a tokenizer.json, EOS alone (generation_config.json has the rest).
  const std::vector<std::int32_t>& end_of_generation_ids() const { return end_of_generation_; }
  // Whether encode(text, true) starts with BOS (a GGUF's add_bos_token; the post-processor's).
  bool adds_bos() const { return bos_id_ && !prefix_ids_.empty() && prefix_ids_[0] == *bos_id_; }
  // The chat template (tokenizer_config.json's chat_template, or chat_template.jinja) and the
  // special-token strings it is rendered with; empty when the checkpoint has none.
  const std::string& chat_template() const { return chat_template_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

  struct AddedToken {
    std::string content;
    std::int32_t id;
    bool special;
    bool lstrip;
    bool rstrip;
  };
  struct NormalizerStep {
    enum class Kind { prepend, replace, lowercase, unicode } kind;
    std::string pattern;  // replace: the string to find; unicode: the form (NFC, NFD, NFKC, NFKD)
    std::string content;  // prepend: the prefix; replace: the replacement
  };
  enum class PrependScheme { always, first, never };
  // How a Split keeps its matches (tokenizers' SplitDelimiterBehavior).
  enum class SplitBehavior {
    removed,
    isolated,
    merged_with_previous,
    merged_with_next,
    contiguous
  };
  struct PreTokenizerStep {
    enum class Kind { metaspace, byte_level, split, digits } kind;
    std::shared_ptr<const UnicodeRegex> regex;  // split (a String pattern is escaped into one);
                                                // byte_level with use_regex: GPT-2's; digits: \p{N}
    SplitBehavior behavior = SplitBehavior::isolated;
    bool invert = false;
    bool add_prefix_space = false;   // byte_level
    bool individual_digits = false;  // digits
  };
  struct DecoderStep {
    enum class Kind { replace, byte_fallback, fuse, strip, metaspace, byte_level } kind;
    std::string pattern;
    std::string content;
    int start = 0;
    int stop = 0;
    PrependScheme prepend = PrependScheme::always;
  };

 private:
  Tokenizer() = default;
  // A stretch [begin, end) of the text to encode: an added token's match, or text between.
  struct Fragment {
    std::size_t begin, end;
    const AddedToken* token;  // null for text
  };
  std::vector<Fragment> split_added_tokens(std::string_view text) const;
  void bpe_word(std::string_view word, std::vector<std::int32_t>& out) const;
  void encode_segment(std::string_view text, bool first_segment,
                      std::vector<std::int32_t>& out) const;
  std::vector<std::string> pre_tokenize_segment(std::string_view text, bool first_segment) const;
  std::optional<double> merge_priority(const std::string& left, const std::string& right) const;
  std::string decode_pieces(std::span<const std::int32_t> ids, bool skip_special_tokens,
                            std::span<const std::int32_t> kept_special) const;
  bool skipped(std::int32_t id, bool skip_special_tokens,
               std::span<const std::int32_t> kept_special) const;

  std::unordered_map<std::string, std::int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<std::string, int> merge_rank_;  // key: left + '\xff' + right
  // SentencePiece merging (GGUF "llama"): any adjacent pair whose concatenation is a token
  // merges, the highest score first; empty for merging by merge_rank_.
  std::vector<float> merge_scores_;
  // GGUF: each token's bytes as llama.cpp's token_to_piece gives them; decode concatenates
  // them instead of running decoder_.
  std::vector<std::string> pieces_;
  bool strip_first_space_ = false;  // GGUF: llama.cpp's add_space_prefix in detokenize
  std::vector<AddedToken> added_;   // longest content first
  // GGUF: added tokens claim their matches longest first over the whole text, as llama.cpp's
  // tokenizer_st_partition does; tokenizers takes the leftmost match instead.
  bool added_longest_first_ = false;
  std::vector<bool> special_;  // by id
  std::vector<NormalizerStep> normalizer_;
  std::vector<PreTokenizerStep> pre_tokenizers_;
  std::string metaspace_replacement_ = "\xe2\x96\x81";  // U+2581 '▁'
  PrependScheme metaspace_prepend_ = PrependScheme::always;
  bool metaspace_split_ = true;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::optional<std::int32_t> unk_id_;
  std::vector<std::int32_t> prefix_ids_;  // from the post-processor's "single" template
  std::vector<std::int32_t> suffix_ids_;
  std::vector<DecoderStep> decoder_;
  std::optional<std::int32_t> eos_id_;
  std::optional<std::int32_t> bos_id_;
  std::vector<std::int32_t> end_of_generation_;  // ascending
  std::string chat_template_;
  std::string bos_token_;
  std::string eos_token_;
};

// GPT-2's pre-tokenizer regex (tokenizers' ByteLevel with use_regex):
inline constexpr std::string_view kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The tokenizer of a model: MODEL/tokenizer.json (with tokenizer_config.json) for a model
// directory, the metadata of a .gguf file (the first split of a split one) otherwise.
Tokenizer load_tokenizer(const std::filesystem::path& model);

}  // namespace moed::model
