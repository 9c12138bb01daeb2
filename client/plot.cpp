#include "plot.hpp"

#include <gd.h>
#include <gdfonts.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace moectl {
namespace {

struct ImageDeleter {
  void operator()(gdImage* image) const { gdImageDestroy(image); }
};

void text(gdImage* image, int x, int y, const std::string& s, int color) {
  gdImageString(image, gdFontGetSmall(), x, y,
                reinterpret_cast<unsigned char*>(const_cast<char*>(s.c_str())), color);
}

std::string format_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, std::fabs(v - std::round(v)) < 1e-9 ? "%.0f" : "%.1f", v);
  return buf;
}

}  // namespace

void write_line_plot(const std::filesystem::path& path, const std::string& title,
                     const std::string& x_label, const std::vector<double>& x,
                     const std::vector<PlotSeries>& series) {
  constexpr int kWidth = 800, kHeight = 500, kLeft = 60, kRight = 150, kTop = 40, kBottom = 50;
  std::unique_ptr<gdImage, ImageDeleter> image(gdImageCreateTrueColor(kWidth, kHeight));
  if (!image) throw std::runtime_error("cannot allocate the plot image");
  gdImage* im = image.get();
  const int white = gdTrueColor(255, 255, 255), black = gdTrueColor(0, 0, 0),
            grid = gdTrueColor(225, 225, 225);
  const int palette[] = {gdTrueColor(31, 119, 180), gdTrueColor(255, 127, 14),
                         gdTrueColor(44, 160, 44), gdTrueColor(214, 39, 40),
                         gdTrueColor(148, 103, 189)};
  gdImageFilledRectangle(im, 0, 0, kWidth - 1, kHeight - 1, white);

  const int plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  const double x_min = x.empty() ? 0 : *std::min_element(x.begin(), x.end());
  double x_max = x.empty() ? 1 : *std::max_element(x.begin(), x.end());
  if (x_max <= x_min) x_max = x_min + 1;
  auto px = [&](double v) {
    return kLeft + static_cast<int>((v - x_min) / (x_max - x_min) * plot_w);
  };
  auto py = [&](double share) { return kTop + plot_h - static_cast<int>(share * plot_h); };

  for (int pct = 0; pct <= 100; pct += 20) {  // y grid and labels
    const int y = py(pct / 100.0);
    gdImageLine(im, kLeft, y, kLeft + plot_w, y, grid);
    text(im, kLeft - 32, y - 6, std::to_string(pct) + "%", black);
  }
  const std::size_t ticks = std::min<std::size_t>(x.size(), 10);
  for (std::size_t k = 0; k < ticks; ++k) {  // x ticks at (up to 10 of) the simulated budgets
    const double v = x[ticks == 1 ? 0 : k * (x.size() - 1) / (ticks - 1)];
    const int xp = px(v);
    gdImageLine(im, xp, kTop + plot_h, xp, kTop + plot_h + 4, black);
    const std::string label = format_number(v);
    text(im, xp - static_cast<int>(label.size()) * 3, kTop + plot_h + 7, label, black);
  }
  gdImageRectangle(im, kLeft, kTop, kLeft + plot_w, kTop + plot_h, black);
  text(im, kLeft, 14, title, black);
  text(im, kLeft + plot_w / 2 - static_cast<int>(x_label.size()) * 3, kHeight - 22, x_label, black);
  text(im, 6, kTop - 18, "hit rate", black);

  gdImageSetThickness(im, 2);
  for (std::size_t s = 0; s < series.size(); ++s) {
    const int color = palette[s % std::size(palette)];
    const auto& y = series[s].y;
    for (std::size_t k = 0; k < y.size() && k < x.size(); ++k) {
      gdImageFilledRectangle(im, px(x[k]) - 2, py(y[k]) - 2, px(x[k]) + 2, py(y[k]) + 2, color);
      if (k > 0) gdImageLine(im, px(x[k - 1]), py(y[k - 1]), px(x[k]), py(y[k]), color);
    }
    const int ly = kTop + 10 + static_cast<int>(s) * 18;
    gdImageLine(im, kLeft + plot_w + 12, ly + 6, kLeft + plot_w + 32, ly + 6, color);
    text(im, kLeft + plot_w + 38, ly, series[s].name, black);
  }

  FILE* out = std::fopen(path.c_str(), "wb");
  if (!out)
    throw std::runtime_error(path.string() + ": cannot write the plot: " + std::strerror(errno));
  gdImagePng(im, out);
  if (std::fclose(out) != 0)
    throw std::runtime_error(path.string() + ": cannot write the plot: " + std::strerror(errno));
}

}  // namespace moectl
