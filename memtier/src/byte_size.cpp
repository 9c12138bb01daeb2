#include "moed/memtier/byte_size.hpp"

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace moed::memtier {

std::uint64_t parse_byte_size(std::string_view text) {
  const std::string s(text);
  auto fail = [&] {
    throw std::invalid_argument("'" + s + "' is not a size (examples: 4096, 512MiB, 24GiB, 1.5GB)");
  };
  std::size_t used = 0;
  double number = 0;
  try {
    number = std::stod(s, &used);
  } catch (const std::exception&) {
    fail();
  }
  if (!(number >= 0) || !std::isfinite(number) || s.find_first_of("eExXpP") < used) fail();
  std::string unit = s.substr(used);
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  static constexpr struct {
    const char* name;
    double factor;
  } kUnits[] = {{"", 1},
                {"B", 1},
                {"KiB", 1024.0},
                {"MiB", 1048576.0},
                {"GiB", 1073741824.0},
                {"TiB", 1099511627776.0},
                {"KB", 1e3},
                {"MB", 1e6},
                {"GB", 1e9},
                {"TB", 1e12},
                {"K", 1024.0},
                {"M", 1048576.0},
                {"G", 1073741824.0},
                {"T", 1099511627776.0}};
  for (const auto& u : kUnits)
    if (unit == u.name) {
      const double bytes = number * u.factor;
      if (bytes > 1.8e19) fail();  // below 2^64, so the conversion is in range
      return static_cast<std::uint64_t>(std::round(bytes));
    }
  fail();
  return 0;
}

std::string format_byte_size(std::uint64_t bytes) {
  static constexpr const char* kNames[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  char out[32];
  std::snprintf(out, sizeof out, unit == 0 ? "%.0f%s" : "%.2f%s", value, kNames[unit]);
  return out;
}

}  // namespace moed::memtier
