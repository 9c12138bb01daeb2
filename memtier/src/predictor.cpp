#include "moed/memtier/predictor.hpp"

#include <algorithm>
#include <stdexcept>

namespace moed::memtier {

RoutingPredictor::RoutingPredictor(Kind kind, std::int32_t layers, std::int32_t experts,
                                   int horizons)
    : kind_(kind), layers_(layers), experts_(experts), horizons_(horizons) {
  if (layers <= 0 || experts <= 0 || horizons <= 0)
    throw std::invalid_argument("RoutingPredictor: needs layers, experts and horizons above 0 (" +
                                std::to_string(layers) + ", " + std::to_string(experts) + ", " +
                                std::to_string(horizons) + ")");
  const auto n = static_cast<std::size_t>(experts);
  if (kind == Kind::transition)
    transitions_.assign(
        static_cast<std::size_t>(layers) * static_cast<std::size_t>(horizons) * n * n, 0);
  frequency_.assign(static_cast<std::size_t>(layers) * n, 0);
  last_routed_.resize(static_cast<std::size_t>(layers));
}

std::uint64_t& RoutingPredictor::transitions(std::int32_t from_layer, int horizon,
                                             std::int32_t from, std::int32_t to) {
  const auto n = static_cast<std::size_t>(experts_);
  return transitions_[((static_cast<std::size_t>(from_layer) * horizons_ +
                        static_cast<std::size_t>(horizon - 1)) *
                           n +
                       static_cast<std::size_t>(from)) *
                          n +
                      static_cast<std::size_t>(to)];
}

std::uint64_t RoutingPredictor::transitions(std::int32_t from_layer, int horizon, std::int32_t from,
                                            std::int32_t to) const {
  return const_cast<RoutingPredictor*>(this)->transitions(from_layer, horizon, from, to);
}

void RoutingPredictor::observe(std::int32_t layer, std::span<const std::int32_t> chosen,
                               int per_row) {
  if (layer < 0 || layer >= layers_)
    throw std::invalid_argument("RoutingPredictor: layer " + std::to_string(layer) +
                                " is outside 0.." + std::to_string(layers_ - 1));
  if (per_row <= 0 || chosen.size() % static_cast<std::size_t>(per_row) != 0)
    throw std::invalid_argument("RoutingPredictor: " + std::to_string(chosen.size()) +
                                " routed experts do not make rows of " + std::to_string(per_row));
  for (const std::int32_t e : chosen)
    if (e < 0 || e >= experts_)
      throw std::invalid_argument("RoutingPredictor: expert " + std::to_string(e) + " of layer " +
                                  std::to_string(layer) + " is outside 0.." +
                                  std::to_string(experts_ - 1));
  per_row_ = per_row;
  for (const std::int32_t e : chosen)
    ++frequency_[static_cast<std::size_t>(layer) * static_cast<std::size_t>(experts_) +
                 static_cast<std::size_t>(e)];
  if (kind_ == Kind::transition) {
    const auto rows = chosen.size() / static_cast<std::size_t>(per_row);
    for (int h = 1; h <= horizons_ && h <= layer; ++h) {
      const auto& earlier = last_routed_[static_cast<std::size_t>(layer - h)];
      if (earlier.size() != chosen.size()) continue;  // another batch: rows do not correspond
      for (std::size_t r = 0; r < rows; ++r)
        for (int i = 0; i < per_row; ++i)
          for (int j = 0; j < per_row; ++j)
            ++transitions(layer - h, h, earlier[r * per_row + i], chosen[r * per_row + j]);
    }
  }
  last_routed_[static_cast<std::size_t>(layer)].assign(chosen.begin(), chosen.end());
}

std::vector<std::int32_t> RoutingPredictor::predict(std::int32_t layer, int horizon,
                                                    int width) const {
  std::vector<std::int32_t> predicted;
  if (horizon < 1 || horizon > horizons_)
    throw std::invalid_argument("RoutingPredictor: horizon " + std::to_string(horizon) +
                                " is outside 1.." + std::to_string(horizons_));
  const std::int32_t target = layer + horizon;
  if (layer < 0 || target >= layers_ || per_row_ == 0) return predicted;
  const auto& current = last_routed_[static_cast<std::size_t>(layer)];
  const auto rows = current.size() / static_cast<std::size_t>(per_row_);
  auto add = [&](std::int32_t e) {
    if (std::ranges::find(predicted, e) == predicted.end()) predicted.push_back(e);
  };
  if (kind_ == Kind::previous) {
    // last_routed_ of a later layer still holds the previous forward pass's rows.
    const auto& previous = last_routed_[static_cast<std::size_t>(target)];
    for (std::size_t r = 0; r < rows && (r + 1) * per_row_ <= previous.size(); ++r)
      for (int i = 0; i < (width ? std::min(width, per_row_) : per_row_); ++i)
        add(previous[r * per_row_ + i]);
    return predicted;
  }
  const std::size_t take = static_cast<std::size_t>(width ? width : per_row_);
  const std::uint64_t* target_frequency =
      frequency_.data() + static_cast<std::size_t>(target) * static_cast<std::size_t>(experts_);
  std::vector<std::int32_t> order(static_cast<std::size_t>(experts_));
  std::vector<std::uint64_t> score(static_cast<std::size_t>(experts_));
  for (std::size_t r = 0; r < rows; ++r) {
    std::ranges::fill(score, 0);
    for (int i = 0; i < per_row_; ++i)
      for (std::int32_t b = 0; b < experts_; ++b)
        score[static_cast<std::size_t>(b)] +=
            transitions(layer, horizon, current[r * per_row_ + i], b);
    for (std::int32_t b = 0; b < experts_; ++b) order[static_cast<std::size_t>(b)] = b;
    const std::size_t n = std::min(take, order.size());
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                      [&](std::int32_t x, std::int32_t y) {
                        const auto sx = score[static_cast<std::size_t>(x)];
                        const auto sy = score[static_cast<std::size_t>(y)];
                        if (sx != sy) return sx > sy;
                        const auto fx = target_frequency[x], fy = target_frequency[y];
                        if (fx != fy) return fx > fy;
                        return x < y;
                      });
    for (std::size_t i = 0; i < n; ++i) add(order[i]);
  }
  return predicted;
}

RoutingPredictor::Kind predictor_kind(std::string_view name) {
  if (name == "transition") return RoutingPredictor::Kind::transition;
  if (name == "previous") return RoutingPredictor::Kind::previous;
  throw std::invalid_argument("predictor '" + std::string(name) +
                              "' is not one of transition, previous");
}

std::string_view to_string(RoutingPredictor::Kind kind) {
  return kind == RoutingPredictor::Kind::transition ? "transition" : "previous";
}

}  // namespace moed::memtier
