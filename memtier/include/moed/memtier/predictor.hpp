#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moed::memtier {

// Predicts the experts a layer `horizon` layers ahead will route to, from the routing seen so
// far, without the model's weights (so also from a trace, as the simulator does).
//   transition: for each layer l and horizon h it counts how often a token routed to expert a at
//     l was routed to expert b at l+h, learned online from every token observed; a token's
//     prediction for l+h is the `width` experts b with the most counts summed over its experts
//     at l, ties going to b's frequency at l+h so far, then to the lower id.
//   previous: the experts the previous token (the same row of the previous batch) was routed to
//     at l+h, since consecutive tokens often share experts.
// A batch of rows predicts the union of its rows' predictions. observe() must be called for
// every layer of every forward pass, in layer order, from one thread.
class RoutingPredictor {
 public:
  enum class Kind { transition, previous };
  RoutingPredictor(Kind kind, std::int32_t layers, std::int32_t experts, int horizons);

  // The experts the rows of a forward pass were routed to at `layer`: `per_row` ids per row.
  // Throws std::invalid_argument naming the layer or expert out of range.
  void observe(std::int32_t layer, std::span<const std::int32_t> chosen, int per_row);
  // The experts `horizon` layers after `layer` for the rows last observed at `layer`, at most
  // `width` per row (0: `per_row`, as many as each row was routed to); empty past the last
  // layer or before anything is known.
  std::vector<std::int32_t> predict(std::int32_t layer, int horizon, int width = 0) const;

  Kind kind() const { return kind_; }

 private:
  std::uint64_t& transitions(std::int32_t from_layer, int horizon, std::int32_t from,
                             std::int32_t to);
  std::uint64_t transitions(std::int32_t from_layer, int horizon, std::int32_t from,
                            std::int32_t to) const;
  Kind kind_;
  std::int32_t layers_, experts_;
  int horizons_;
  int per_row_ = 0;
  std::vector<std::uint64_t> transitions_;              // [layer][horizon-1][from][to]
  std::vector<std::uint64_t> frequency_;                // [layer][expert]
  std::vector<std::vector<std::int32_t>> last_routed_;  // per layer: rows x per_row ids
};

// "transition" or "previous"; throws std::invalid_argument naming the value otherwise.
RoutingPredictor::Kind predictor_kind(std::string_view name);
std::string_view to_string(RoutingPredictor::Kind kind);

}  // namespace moed::memtier
