#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace moectl {

struct PlotSeries {
  std::string name;
  std::vector<double> y;  // one value per x
};

// Writes a PNG line chart (libgd): one line per series over the shared x values, with axes,
// ticks and a legend. y is a share in [0, 1] shown as percent. Throws naming the path when the
// file cannot be written.
void write_line_plot(const std::filesystem::path& path, const std::string& title,
                     const std::string& x_label, const std::vector<double>& x,
                     const std::vector<PlotSeries>& series);

}  // namespace moectl
