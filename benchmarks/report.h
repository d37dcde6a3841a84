// benchmarks/report.h — what a benchmark program leaves besides its tables:
// a CSV file with every number of its tables, SVG figures drawn from them,
// and a progress line while it runs. Header-only, the C++ standard library
// and POSIX only (no plotting program, nothing to install). bench_common.h
// includes it.
//
// Files. At the end of a run a program writes into its output directory
//   <prog>.csv            one row per number of its tables (below)
//   <prog>-<figure>.svg   one file per figure that has data: grouped
//                         horizontal bars (weft against NPTL per operation,
//                         one figure per unit) or lines (a value against
//                         the connection count, one line per server)
// and then prints, after its tables, one line per file written (absolute
// paths), so that whoever ran it sees where the plots are:
//   data: /home/me/weft/build/benchmarks/results/echo_bench.csv
//   plot: /home/me/weft/build/benchmarks/results/echo_bench-rps.svg
//
// Output directory: --out=DIR on every program; by default results/ next
// to the executable (the directory of /proc/self/exe, so
// build/benchmarks/results after a normal build: inside the build
// directory, never in the source tree). It is created with its parents if
// missing. If it cannot be created or a file cannot be written, the
// program says so on stderr (the path and strerror) and exits with status
// 1, after its tables: a long run's results are never lost.
//
// CSV (RFC 4180 quoting: a field with a comma, a double quote or a line
// break is put in double quotes, its double quotes doubled; lines end in
// LF, like every other text file here). The header line is
//   program,table,series,x,metric,median,min,max,rounds
// table: the table or section of the program's output ("echo", "http");
// series: what ran ("weft 1 worker", "NPTL"); x: the operation ("yield")
// or the connection count ("1000"); metric: the quantity with its unit
// ("ns/op", "req/s", "p99 us"); median, min and max over `rounds` rounds.
// A number the program has once (a sum over the rounds) has min = max =
// median. Ratios and targets are not rows: they follow from the medians.
//
// SVG: self-contained (no script, no external font or style), 800 px wide
// and up to about 450 high (taller only with many bars), with a title that
// names the program and the figure, a line saying what ran it (weft's
// version and KLT backend, the CPUs, the kernel) and when, axis titles
// with units and a legend. Bars show the median with a whisker from min to
// max (hover a bar or point for its numbers); a value axis is logarithmic
// when the values span more than 100x, the x axis of lines (connection
// counts) from 10x. A figure without data is not written.
//
// Progress: a Progress object writes "\r\033[K[round 2/3] prog: what"
// to stderr, one line rewritten in place, only if stderr is a terminal
// (nothing at all otherwise: logs and pipes stay clean), and erases it
// before the tables are printed and when the program ends or fails.
#pragma once

#include <limits.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace bench {

// ---------------------------------------------------------------------------
// Measurements and figures.

// One number of a program's tables, over its rounds.
struct ResultRow {
  std::string table;   // the table or section it is printed in
  std::string series;  // what ran: "weft 1 worker", "NPTL"
  std::string x;       // the operation, or a number (a connection count)
  std::string metric;  // quantity and unit: "ns/op", "req/s", "p99 us"
  double median = 0, min = 0, max = 0;
  int rounds = 0;
};

// A figure: which rows it draws and how. Bars: one group per x (in the
// order recorded), one bar per series in the group. Lines: x read as a
// number, one line per series.
struct Figure {
  enum Kind { kBars, kLines };
  std::string name;                  // the file is <prog>-<name>.svg
  std::string title;                 // what it shows (after the program's name)
  Kind kind = kBars;
  std::vector<std::string> tables;   // rows of these tables (empty: any)
  std::vector<std::string> metrics;  // with one of these metrics (empty: any)
  std::string value_label;           // the value axis' title, with its unit
  std::string x_label;               // lines: the x axis' title
};

// ---------------------------------------------------------------------------
// Formats.

// `s` as one CSV field (RFC 4180): in double quotes, its double quotes
// doubled, if it holds a comma, a double quote or a line break.
inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

// A number for the CSV file: up to 10 significant digits (no exponent
// below 1e10), or an empty field for a value that is not finite.
inline std::string csv_number(double v) {
  if (!std::isfinite(v)) return "";
  char b[40];
  snprintf(b, sizeof b, "%.10g", v);
  return b;
}

// `s` with XML's special characters as entities (text and attributes).
inline std::string xml_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default: o += c;
    }
  }
  return o;
}

// A number in a few characters for axes and labels: 0.25, 12.5, 830,
// 4210, 15.2k, 1.23M.
inline std::string short_number(double v) {
  char b[40];
  double a = std::fabs(v);
  if (a == 0) return "0";
  if (a >= 1e6) snprintf(b, sizeof b, "%.3gM", v / 1e6);
  else if (a >= 1e4) snprintf(b, sizeof b, "%.3gk", v / 1e3);
  else if (a >= 1e3) snprintf(b, sizeof b, "%.0f", v);
  else snprintf(b, sizeof b, "%.3g", v);
  return b;
}

// Whether an axis from `lo` to `hi` (the smallest and largest positive
// values on it) is drawn logarithmic: when they span more than 100x.
inline bool wants_log_scale(double lo, double hi) { return lo > 0 && hi > 0 && hi / lo > 100; }

// ---------------------------------------------------------------------------
// Files.

// Creates directory `path` and its missing parents (mkdir -p). Returns 0,
// or an errno value with the directory that failed in *failed.
inline int make_dirs(const std::string& path, std::string* failed) {
  if (path.empty()) {
    *failed = path;
    return ENOENT;
  }
  for (size_t i = 1; i <= path.size(); i++) {
    if (i < path.size() && path[i] != '/') continue;
    std::string p = path.substr(0, i);
    if (mkdir(p.c_str(), 0777) == 0) continue;
    int err = errno;
    struct stat st;
    if (err == EEXIST && stat(p.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) continue;
      err = ENOTDIR;
    }
    *failed = p;
    return err;
  }
  return 0;
}

// results/ in the directory of this program's executable (/proc/self/exe),
// or "results" (the working directory's) if that cannot be read.
inline std::string default_out_dir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "results";
  buf[n] = '\0';
  std::string p = buf;
  return p.substr(0, p.rfind('/')) + "/results";
}

// Writes `text` to file `path`. Returns 0 or an errno value.
inline int write_file(const std::string& path, const std::string& text) {
  FILE* f = fopen(path.c_str(), "w");
  if (f == nullptr) return errno;
  errno = 0;
  size_t n = fwrite(text.data(), 1, text.size(), f);
  int err = n == text.size() ? 0 : (errno != 0 ? errno : EIO);
  if (fclose(f) != 0 && err == 0) err = errno;
  return err;
}

// ---------------------------------------------------------------------------
// SVG drawing (Report::svg).

namespace report_svg {

constexpr double kWidth = 800;
constexpr double kHeight = 450;
constexpr double kCharW = 6.8;  // average width of a 12 px sans-serif character

// The colours of the series, in the order they appear.
inline const char* color(size_t i) {
  static const char* const kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return kColors[i % (sizeof kColors / sizeof kColors[0])];
}

// `s` cut to `n` characters, "..." marking the cut.
inline std::string clip(const std::string& s, size_t n) {
  return s.size() <= n ? s : s.substr(0, n - 3) + "...";
}

// A number as an SVG coordinate.
inline std::string num(double v) {
  char b[32];
  snprintf(b, sizeof b, "%.1f", v);
  return b;
}

// The attributes of an element: names and values (not escaped yet).
using Attrs = std::initializer_list<std::pair<const char*, std::string>>;

// An element and a line break: <name a="v" ...>inner</name>, or
// <name a="v" .../> if `inner` is empty. The values are escaped here;
// `inner` is XML already.
inline std::string el(const char* name, Attrs attrs, const std::string& inner = "") {
  std::string s = "<" + std::string(name);
  for (const auto& [k, v] : attrs) s += " " + std::string(k) + "=\"" + xml_escape(v) + "\"";
  return inner.empty() ? s + "/>\n" : s + ">" + inner + "</" + name + ">\n";
}

// A <text> element holding `text` (escaped here).
inline std::string text_el(Attrs attrs, const std::string& text) {
  return el("text", attrs, xml_escape(text));
}

// A <line> of class `cls` from (x1, y1) to (x2, y2).
inline std::string line_el(const char* cls, double x1, double y1, double x2, double y2, const char* stroke) {
  return el("line", {{"class", cls}, {"x1", num(x1)}, {"y1", num(y1)}, {"x2", num(x2)}, {"y2", num(y2)},
                     {"stroke", stroke}});
}

// A <path> of class `cls`: path data `d`, stroked, not filled.
inline std::string path_el(const char* cls, const std::string& d, const char* stroke) {
  return el("path", {{"class", cls}, {"d", d}, {"stroke", stroke}, {"fill", "none"}});
}

// A tick's label: 0.5, 20, 250, 5k, 2.5k, 10k, 1.5M (ticks are round
// numbers: no digits lost).
inline std::string tick_label(double v) {
  char b[40];
  double a = std::fabs(v);
  if (a >= 1e6) snprintf(b, sizeof b, "%gM", v / 1e6);
  else if (a >= 1e3) snprintf(b, sizeof b, "%gk", v / 1e3);
  else snprintf(b, sizeof b, "%g", v);
  return b;
}

// A tick label `label` at (x, y), anchored "middle" or "end".
inline std::string tick_el(double x, double y, const char* anchor, const std::string& label) {
  return text_el(
      {{"class", "tick"}, {"x", num(x)}, {"y", num(y)}, {"text-anchor", anchor}, {"font-size", "11"}}, label);
}

// The frame of a plot: the left and bottom axes.
inline std::string frame_el(double left, double top, double right, double bottom) {
  return path_el("axis", "M" + num(left) + " " + num(top) + "V" + num(bottom) + "H" + num(right), "#000");
}

// An axis title centred at (x, y), turned upright if `vertical`.
inline std::string axis_title_el(double x, double y, bool vertical, const std::string& text) {
  if (!vertical) {
    return text_el({{"class", "axis-title"}, {"x", num(x)}, {"y", num(y)}, {"text-anchor", "middle"}}, text);
  }
  const std::string turn = "rotate(-90 " + num(x) + " " + num(y) + ")";
  return text_el(
      {{"class", "axis-title"}, {"x", num(x)}, {"y", num(y)}, {"transform", turn}, {"text-anchor", "middle"}},
      text);
}

// A value axis: the range it shows, linear or logarithmic, its ticks, and
// where a value lands between two pixel positions.
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  std::vector<double> ticks;
  // The pixel position of `v` on an axis drawn from p0 (lo) to p1 (hi);
  // values outside the range are clamped to it.
  double pos(double v, double p0, double p1) const {
    double f;
    if (log) f = v > 0 ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : 0;
    else f = (v - lo) / (hi - lo);
    f = std::clamp(f, 0.0, 1.0);
    return p0 + f * (p1 - p0);
  }
};

// An axis for values in [vmin, vmax] (vmin_pos: the smallest positive
// one): logarithmic from decade to decade when they span more than 100x,
// else linear from 0 (from_zero) or from vmin, with 1-2-5 ticks.
inline Axis make_axis(double vmin, double vmin_pos, double vmax, bool from_zero) {
  Axis a;
  if (wants_log_scale(vmin_pos, vmax)) {
    a.log = true;
    a.lo = std::pow(10.0, std::floor(std::log10(vmin_pos)));
    a.hi = std::pow(10.0, std::ceil(std::log10(vmax)));
    if (a.hi <= a.lo) a.hi = a.lo * 10;
    int decades = static_cast<int>(std::lround(std::log10(a.hi / a.lo)));
    for (double d = a.lo; d <= a.hi * 1.0001; d *= 10) {
      a.ticks.push_back(d);
      if (decades <= 3 && d * 10 <= a.hi * 1.0001) {
        a.ticks.push_back(2 * d);
        a.ticks.push_back(5 * d);
      }
    }
    std::sort(a.ticks.begin(), a.ticks.end());
    return a;
  }
  a.lo = from_zero ? std::min(0.0, vmin) : vmin;
  a.hi = vmax;
  if (!(a.hi > a.lo)) a.hi = a.lo + (a.lo == 0 ? 1 : std::fabs(a.lo));
  double raw = (a.hi - a.lo) / 5;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  }
  a.lo = std::floor(a.lo / step) * step;
  a.hi = std::ceil(a.hi / step) * step;
  for (double t = a.lo; t <= a.hi + step / 2; t += step) {
    a.ticks.push_back(std::fabs(t) < step / 1e6 ? 0 : t);  // no "-0" from rounding
  }
  return a;
}

// The legend: a coloured square and the name of every series, in rows from
// y = top; returns the y below it.
inline double legend(std::string* out, const std::vector<std::string>& series, double top) {
  double x = 20, y = top;
  for (size_t i = 0; i < series.size(); i++) {
    std::string name = clip(series[i], 40);
    double w = 16 + kCharW * static_cast<double>(name.size()) + 18;
    if (x + w > kWidth - 20 && x > 20) {
      x = 20;
      y += 18;
    }
    std::string square = el("rect", {{"x", num(x)}, {"y", num(y)}, {"width", "12"}, {"height", "12"},
                                     {"fill", color(i)}});
    *out += el("g", {{"class", "legend"}}, square + text_el({{"x", num(x + 16)}, {"y", num(y + 10)}}, name));
    x += w;
  }
  return y + 18;
}

// The start of the document: the XML declaration, the <svg> element's
// start tag, a white background, the title and the two lines under it
// (machine; date and note). footer() ends it.
inline std::string header(double height, const std::string& title, const std::string& machine,
                          const std::string& when) {
  std::string s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(kWidth) + "\" height=\"" + num(height) +
       "\" viewBox=\"0 0 " + num(kWidth) + " " + num(height) +
       "\" font-family=\"DejaVu Sans, Arial, Helvetica, sans-serif\" font-size=\"12\">\n";
  s += el("title", {}, xml_escape(title));
  s += el("rect", {{"class", "background"}, {"width", "100%"}, {"height", "100%"}, {"fill", "white"}});
  const std::string mid = num(kWidth / 2);
  s += text_el({{"class", "title"}, {"x", mid}, {"y", "24"}, {"text-anchor", "middle"}, {"font-size", "16"},
                {"font-weight", "bold"}},
               clip(title, 90));
  s += text_el({{"class", "machine"}, {"x", mid}, {"y", "42"}, {"text-anchor", "middle"}, {"font-size", "11"},
                {"fill", "#444"}},
               clip(machine, 130));
  s += text_el({{"class", "date"}, {"x", mid}, {"y", "57"}, {"text-anchor", "middle"}, {"font-size", "11"},
                {"fill", "#444"}},
               clip(when, 130));
  return s;
}

// The end of the document: what the marks show (`marks`) in the bottom
// right corner, and the <svg> element's end tag.
inline std::string footer(double height, const std::string& marks) {
  return text_el({{"class", "marks"}, {"x", num(kWidth - 10)}, {"y", num(height - 8)}, {"text-anchor", "end"},
                  {"font-size", "10"}, {"fill", "#666"}},
                 marks) +
         "</svg>\n";
}

}  // namespace report_svg

// ---------------------------------------------------------------------------
// The recorder.

// What a program measured (rows), the figures it wants, and the writing of
// both at the end of its run.
class Report {
 public:
  // `prog`: the program's name (file names, titles); `machine`: a line
  // saying what ran it (bench::system_summary() in bench_common.h). The
  // date in the figures is the time of this call.
  Report(std::string prog, std::string machine) : prog_(std::move(prog)), machine_(std::move(machine)) {
    time_t t = time(nullptr);
    struct tm tm;
    localtime_r(&t, &tm);
    char b[64];
    strftime(b, sizeof b, "%Y-%m-%d %H:%M %Z", &tm);
    date_ = b;
  }

  // A note for the figures' date line, e.g. "3 rounds (--quick)".
  void set_note(std::string note) { note_ = std::move(note); }

  // Records one number. A row with the table, series, x and metric of an
  // earlier one replaces it (a table that prints one comparison twice).
  void add(const std::string& table, const std::string& series, const std::string& x,
           const std::string& metric, double median, double min, double max, int rounds) {
    ResultRow r{table, series, x, metric, median, min, max, rounds};
    for (ResultRow& o : rows_) {
      if (o.table == table && o.series == series && o.x == x && o.metric == metric) {
        o = r;
        return;
      }
    }
    rows_.push_back(r);
  }

  // Records the median, min and max of `s` (a Samples of bench_common.h:
  // median(), min(), max(), empty(), v); nothing if it is empty (not run).
  template <class S>
  void add(const std::string& table, const std::string& series, const std::string& x,
           const std::string& metric, const S& s) {
    if (s.empty()) return;
    add(table, series, x, metric, s.median(), s.min(), s.max(), static_cast<int>(s.v.size()));
  }

  // Records a number the program has once (min = max = median), e.g. a sum
  // over `rounds` rounds.
  void add_value(const std::string& table, const std::string& series, const std::string& x,
                 const std::string& metric, double v, int rounds) {
    add(table, series, x, metric, v, v, v, rounds);
  }

  // Adds a figure to the ones written at the end.
  void add_figure(Figure f) { figures_.push_back(std::move(f)); }

  // The rows recorded, in order.
  const std::vector<ResultRow>& rows() const { return rows_; }

  // The figures added, in order.
  const std::vector<Figure>& figures() const { return figures_; }

  // The CSV file: the header line, then one line per row.
  std::string csv() const {
    std::string s = "program,table,series,x,metric,median,min,max,rounds\n";
    for (const ResultRow& r : rows_) {
      for (const std::string& field : {prog_, r.table, r.series, r.x, r.metric}) s += csv_field(field) + ",";
      s += csv_number(r.median) + "," + csv_number(r.min) + "," + csv_number(r.max) + "," +
           std::to_string(r.rounds) + "\n";
    }
    return s;
  }

  // The rows figure `f` draws: those of its tables and metrics with a
  // finite median (bars) and, for lines, a numeric x.
  std::vector<ResultRow> select(const Figure& f) const {
    std::vector<ResultRow> out;
    auto has = [](const std::vector<std::string>& v, const std::string& s) {
      return v.empty() || std::find(v.begin(), v.end(), s) != v.end();
    };
    for (const ResultRow& r : rows_) {
      if (!has(f.tables, r.table) || !has(f.metrics, r.metric) || !std::isfinite(r.median)) continue;
      if (f.kind == Figure::kLines && !std::isfinite(x_number(r.x))) continue;
      out.push_back(r);
    }
    return out;
  }

  // The SVG document of `f`, or "" if it has nothing to draw. A line per
  // series and metric: with several metrics, "<series> (<metric>)".
  std::string svg(const Figure& f) const {
    std::vector<ResultRow> rows = select(f);
    if (rows.empty()) return "";
    if (f.kind == Figure::kBars) return bars_svg(f, rows);
    if (distinct(rows, &ResultRow::metric).size() > 1) {
      for (ResultRow& r : rows) r.series += " (" + r.metric + ")";
    }
    return lines_svg(f, rows);
  }

  // Writes <dir>/<prog>.csv and the SVG of every figure with data into
  // `dir` (created with its parents if missing). On success true, with the
  // absolute paths written in *written; else false and a message naming the
  // path and the error in *error.
  bool write(const std::string& dir, std::vector<std::string>* written, std::string* error) const {
    std::string failed;
    if (int err = make_dirs(dir, &failed); err != 0) {
      *error = "cannot create directory " + dir + ": " + (failed != dir ? failed + ": " : "") + strerror(err);
      return false;
    }
    char real[PATH_MAX];
    if (realpath(dir.c_str(), real) == nullptr) {
      *error = "cannot resolve " + dir + ": " + strerror(errno);
      return false;
    }
    std::string base = std::string(real) + "/" + prog_;
    auto put = [&](const std::string& path, const std::string& text) {
      if (int err = write_file(path, text); err != 0) {
        *error = "cannot write " + path + ": " + strerror(err);
        return false;
      }
      written->push_back(path);
      return true;
    };
    if (!put(base + ".csv", csv())) return false;
    for (const Figure& f : figures_) {
      std::string s = svg(f);
      if (!s.empty() && !put(base + "-" + f.name + ".svg", s)) return false;
    }
    return true;
  }

  // The end of a program's main(), after its tables: writes the files into
  // `dir` (default_out_dir() if empty) and prints "data: <path>" and
  // "plot: <path>" on stdout, one line per file. Returns the program's exit
  // status: 0, or 1 after a message on stderr if a file could not be made.
  int finish(const std::string& dir) const {
    std::vector<std::string> written;
    std::string error;
    bool ok = write(dir.empty() ? default_out_dir() : dir, &written, &error);
    for (const std::string& p : written) {
      bool csv_file = p.size() >= 4 && p.compare(p.size() - 4, 4, ".csv") == 0;
      printf("%s: %s\n", csv_file ? "data" : "plot", p.c_str());
    }
    fflush(stdout);
    if (!ok) {
      fprintf(stderr, "%s: %s\n", prog_.c_str(), error.c_str());
      return 1;
    }
    return 0;
  }

 private:
  // `x` as a number, or NaN if it is not one (a whole-string parse).
  static double x_number(const std::string& x) {
    if (x.empty()) return NAN;
    char* end = nullptr;
    double v = strtod(x.c_str(), &end);
    return *end == '\0' ? v : NAN;
  }

  // The distinct values of `field` over `rows`, in order of appearance.
  static std::vector<std::string> distinct(const std::vector<ResultRow>& rows,
                                           std::string ResultRow::*field) {
    std::vector<std::string> out;
    for (const ResultRow& r : rows) {
      if (std::find(out.begin(), out.end(), r.*field) == out.end()) out.push_back(r.*field);
    }
    return out;
  }

  // The figure's title: the program's name and what it shows.
  std::string title(const Figure& f) const { return prog_ + ": " + f.title; }

  // The date line: the date and the note.
  std::string when() const { return note_.empty() ? date_ : date_ + "   " + note_; }

  // A tooltip: series, x, median and the range over the rounds.
  static std::string tooltip(const ResultRow& r) {
    std::string t = r.series + ", " + r.x + ": " + short_number(r.median) + " " + r.metric;
    if (has_range(r)) t += " (min " + short_number(r.min) + ", max " + short_number(r.max) + ")";
    return t + ", " + std::to_string(r.rounds) + (r.rounds == 1 ? " round" : " rounds");
  }

  // The smallest and largest values of `rows` (medians, mins and maxes)
  // and the smallest positive one (0 if none).
  static void value_range(const std::vector<ResultRow>& rows, double* vmin, double* vmin_pos, double* vmax) {
    *vmin = *vmin_pos = *vmax = 0;
    for (const ResultRow& r : rows) {
      for (double v : {r.median, r.min, r.max}) {
        if (!std::isfinite(v)) continue;
        *vmin = std::min(*vmin, v);
        *vmax = std::max(*vmax, v);
        if (v > 0 && (*vmin_pos == 0 || v < *vmin_pos)) *vmin_pos = v;
      }
    }
  }

  // Whether `r` has a range over its rounds worth a whisker.
  static bool has_range(const ResultRow& r) {
    return r.rounds > 1 && r.min != r.max && std::isfinite(r.min) && std::isfinite(r.max);
  }

  // Grouped horizontal bars: a group per x, a bar per series in it.
  std::string bars_svg(const Figure& f, const std::vector<ResultRow>& rows) const {
    using namespace report_svg;
    const std::vector<std::string> groups = distinct(rows, &ResultRow::x);
    const std::vector<std::string> series = distinct(rows, &ResultRow::series);
    double vmin, vmin_pos, vmax;
    value_range(rows, &vmin, &vmin_pos, &vmax);
    const Axis axis = make_axis(vmin, vmin_pos, vmax, true);

    std::string body;
    const double plot_top = legend(&body, series, 68) + 6;
    size_t longest = 0;
    for (const std::string& g : groups) longest = std::max(longest, std::min<size_t>(g.size(), 44));
    const double left = std::clamp(kCharW * static_cast<double>(longest) + 20, 90.0, 330.0);
    const double right = kWidth - 80;
    // A bar slot per row, 0.8 of one between groups; slots of 14-36 px:
    // the figure is kHeight high, less with few bars, more with many.
    // Below the plot: tick labels, the axis title, the footer.
    const double slots = static_cast<double>(rows.size()) + 0.8 * static_cast<double>(groups.size());
    const double unit = std::clamp((kHeight - 62 - plot_top) / slots, 14.0, 36.0);
    const double plot_bottom = plot_top + unit * slots;
    const double height = plot_bottom + 62;

    // Grid and value axis.
    for (double t : axis.ticks) {
      const double x = axis.pos(t, left, right);
      body += line_el("grid", x, plot_top, x, plot_bottom, "#ddd");
      body += tick_el(x, plot_bottom + 16, "middle", tick_label(t));
    }
    body += frame_el(left, plot_top, right, plot_bottom);
    body += axis_title_el((left + right) / 2, plot_bottom + 36, false,
                          f.value_label + (axis.log ? ", log scale" : ""));

    // The groups and their bars, in the order recorded; a series keeps its
    // colour (its place in the legend) throughout.
    double y = plot_top + 0.4 * unit;
    for (const std::string& g : groups) {
      const double g_top = y;
      for (const ResultRow& r : rows) {
        if (r.x != g) continue;
        const size_t s =
            static_cast<size_t>(std::find(series.begin(), series.end(), r.series) - series.begin());
        const bool drawable = !axis.log || r.median > 0;
        const double base = axis.log ? left : axis.pos(0, left, right);
        const double end = drawable ? axis.pos(r.median, left, right) : left;
        const double cy = y + unit / 2;
        body += el("rect",
                   {{"class", "bar"}, {"x", num(std::min(base, end))}, {"y", num(y + 0.1 * unit)},
                    {"width", num(std::max(std::fabs(end - base), 1.0))}, {"height", num(0.8 * unit)},
                    {"fill", color(s)}},
                   el("title", {}, xml_escape(tooltip(r))));
        double text_x = end;
        if (has_range(r)) {  // min to max, with end marks
          const std::string x0 = num(axis.pos(r.min, left, right)), x1 = num(axis.pos(r.max, left, right));
          const std::string y0 = num(cy - 4), y1 = num(cy + 4);
          const std::string ends = "M" + x0 + " " + y0 + "V" + y1 + "M" + x1 + " " + y0 + "V" + y1;
          body += path_el("whisker", "M" + x0 + " " + num(cy) + "H" + x1 + ends, "#222");
          text_x = std::max(text_x, axis.pos(r.max, left, right));
        }
        body += text_el({{"class", "value"}, {"x", num(text_x + 4)}, {"y", num(cy + 4)}, {"font-size", "11"}},
                        drawable ? short_number(r.median) : "n/a");
        y += unit;
      }
      body += text_el({{"class", "category"}, {"x", num(left - 8)}, {"y", num((g_top + y) / 2 + 4)},
                       {"text-anchor", "end"}},
                      clip(g, 44));
      y += 0.8 * unit;
    }
    return header(height, title(f), machine_, when()) + body +
           footer(height, "bars: median of rounds; whiskers: min to max");
  }

  // Lines: x read as a number, one line per series through its points in
  // order of x, a whisker from min to max at every point.
  std::string lines_svg(const Figure& f, const std::vector<ResultRow>& rows) const {
    using namespace report_svg;
    const std::vector<std::string> series = distinct(rows, &ResultRow::series);
    std::vector<double> xs;
    for (const ResultRow& r : rows) {
      double x = x_number(r.x);
      if (std::find(xs.begin(), xs.end(), x) == xs.end()) xs.push_back(x);
    }
    std::sort(xs.begin(), xs.end());
    double vmin, vmin_pos, vmax;
    value_range(rows, &vmin, &vmin_pos, &vmax);
    const Axis yaxis = make_axis(vmin, vmin_pos, vmax, true);
    // The x axis: the data's own x values as ticks (up to 12), the range
    // padded so that no point sits on the frame; logarithmic from a 10x
    // span (connection counts grow by factors: 10, 100, 1000).
    Axis xaxis;
    xaxis.log = xs.front() > 0 && xs.back() / xs.front() >= 10;
    if (xaxis.log) {
      xaxis.lo = xs.front() / 1.3;
      xaxis.hi = xs.back() * 1.3;
    } else {
      double span = xs.back() - xs.front();
      double pad = span > 0 ? span * 0.06 : std::max(1.0, std::fabs(xs.front()) * 0.5);
      xaxis.lo = xs.front() - pad;
      xaxis.hi = xs.back() + pad;
    }
    const bool data_ticks = xs.size() <= 12;  // labelled as the values are: "1000", not "1k"
    xaxis.ticks = data_ticks ? xs : make_axis(xs.front(), xs.front(), xs.back(), false).ticks;

    std::string body;
    const double plot_top = legend(&body, series, 68) + 10;
    const double left = 78, right = kWidth - 30;
    const double height = std::max(kHeight, plot_top + 200 + 64);
    const double plot_bottom = height - 64;  // tick labels, the axis title, the footer
    auto px = [&](double x) { return xaxis.pos(x, left, right); };
    auto py = [&](double v) { return yaxis.pos(v, plot_bottom, plot_top); };

    for (double t : yaxis.ticks) {
      body += line_el("grid", left, py(t), right, py(t), "#ddd");
      body += tick_el(left - 6, py(t) + 4, "end", tick_label(t));
    }
    for (double t : xaxis.ticks) {
      if (t < xaxis.lo || t > xaxis.hi) continue;
      body += line_el("grid", px(t), plot_top, px(t), plot_bottom, "#eee");
      body += tick_el(px(t), plot_bottom + 16, "middle", data_ticks ? short_number(t) : tick_label(t));
    }
    body += frame_el(left, plot_top, right, plot_bottom);
    body += axis_title_el((left + right) / 2, plot_bottom + 36, false,
                          f.x_label + (xaxis.log ? ", log scale" : ""));
    body += axis_title_el(18, (plot_top + plot_bottom) / 2, true,
                          f.value_label + (yaxis.log ? ", log scale" : ""));

    for (size_t s = 0; s < series.size(); s++) {
      std::vector<const ResultRow*> pts;
      for (const ResultRow& r : rows) {
        if (r.series == series[s]) pts.push_back(&r);
      }
      std::stable_sort(pts.begin(), pts.end(), [](const ResultRow* a, const ResultRow* b) {
        return x_number(a->x) < x_number(b->x);
      });
      std::string points;
      for (const ResultRow* r : pts) {
        points += (points.empty() ? "" : " ") + num(px(x_number(r->x))) + "," + num(py(r->median));
      }
      body += el("polyline", {{"class", "line"}, {"points", points}, {"fill", "none"}, {"stroke", color(s)},
                              {"stroke-width", "2"}});
      for (const ResultRow* r : pts) {
        const std::string x = num(px(x_number(r->x)));
        if (has_range(*r)) {
          body += path_el("whisker", "M" + x + " " + num(py(r->min)) + "V" + num(py(r->max)), color(s));
        }
        body += el("circle", {{"class", "point"}, {"cx", x}, {"cy", num(py(r->median))}, {"r", "4"},
                              {"fill", color(s)}},
                   el("title", {}, xml_escape(tooltip(*r))));
      }
    }
    return header(height, title(f), machine_, when()) + body +
           footer(height, "points: median of rounds; whiskers: min to max");
  }

  std::string prog_, machine_, date_, note_;
  std::vector<ResultRow> rows_;
  std::vector<Figure> figures_;
};

// ---------------------------------------------------------------------------
// Progress on a terminal.

class Progress;
// The Progress shown last, erased by erase_progress().
inline Progress* g_progress = nullptr;

// One line on a terminal saying what runs and how far the run is, rewritten
// in place: "\r\033[K" (back to the start of the line, erase it) and the
// text, no newline. Silent (writes nothing at all) unless its descriptor is
// a terminal. Erase it (clear()) before printing to stdout; the destructor
// and erase_progress() (called by bench_common.h's error exits) erase it
// too.
class Progress {
 public:
  // On stderr, active if stderr is a terminal. `label` (the program's
  // name) follows "[round i/n] " in round().
  explicit Progress(std::string label)
      : Progress(std::move(label), STDERR_FILENO, isatty(STDERR_FILENO) != 0) {}

  // On descriptor `fd`, active if `active` (for tests).
  Progress(std::string label, int fd, bool active) : label_(std::move(label)), fd_(fd), active_(active) {
    if (active_) g_progress = this;
  }

  ~Progress() {
    clear();
    if (g_progress == this) g_progress = nullptr;
  }

  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Whether it writes anything.
  bool active() const { return active_; }

  // Shows "[round i/n] <label>: " and the printf-formatted text.
  void round(int i, int n, const char* fmt, ...) __attribute__((format(printf, 4, 5))) {
    if (!active_) return;
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char line[400];
    snprintf(line, sizeof line, "[round %d/%d] %s: %s", i, n, label_.c_str(), what);
    put(line);
  }

  // Shows the printf-formatted text as it is.
  void show(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    if (!active_) return;
    char line[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    put(line);
  }

  // Erases the line shown, if there is one.
  void clear() {
    if (!active_ || !shown_) return;
    write_all("\r\033[K");
    shown_ = false;
  }

 private:
  // "\r\033[K" and `text` cut to the terminal's width less one column (a
  // line that wrapped could not be erased in place). stdout is flushed
  // first so that what was printed there comes before.
  void put(const char* text) {
    fflush(stdout);
    size_t width = 80;
    struct winsize ws;
    if (ioctl(fd_, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1) width = ws.ws_col;
    std::string s = "\r\033[K";
    s.append(text, std::min(strlen(text), width - 1));
    write_all(s);
    shown_ = true;
  }

  // write(2) of all of `s`, going on after a signal; errors ignored (a
  // progress line is not worth failing for).
  void write_all(const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
      ssize_t n = ::write(fd_, s.data() + done, s.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }

  std::string label_;
  int fd_;
  bool active_;
  bool shown_ = false;
};

// Erases the progress line shown (if any): before an error message.
inline void erase_progress() {
  if (g_progress != nullptr) g_progress->clear();
}

}  // namespace bench
