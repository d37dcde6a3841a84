// Tests for benchmarks/report.h, what the benchmark programs write besides
// their tables: the CSV file (RFC 4180 quoting, fields read back equal),
// the SVG figures (well-formed XML with everything escaped, one bar / line
// / legend entry per row or series, a log axis exactly when the values span
// more than 100x, no file for a figure without data), the output directory
// (created with its parents; an error names the path) and the progress
// line (nothing at all unless stderr is a terminal). No runtime is started.
#include "benchmarks/report.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace bench {
namespace {

// ---------------------------------------------------------------------------
// Helpers.

// The records of an RFC 4180 CSV text (LF or CRLF line ends): quoted fields
// may hold commas, doubled quotes and line breaks. A malformed text (a quote
// inside an unquoted field, an unterminated quoted field) fails the test.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> rec;
  std::string field;
  size_t i = 0;
  bool quoted = false, field_started = false;
  while (i < text.size()) {
    char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        i += 2;
      } else if (c == '"') {
        quoted = false;
        i++;
        if (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          ADD_FAILURE() << "text after a closing quote at " << i;
          return records;
        }
      } else {
        field += c;
        i++;
      }
      continue;
    }
    if (c == '"') {
      if (field_started) {
        ADD_FAILURE() << "a quote inside an unquoted field at " << i;
        return records;
      }
      quoted = true;
      field_started = true;
      i++;
    } else if (c == ',') {
      rec.push_back(field);
      field.clear();
      field_started = false;
      i++;
    } else if (c == '\n' || c == '\r') {
      rec.push_back(field);
      records.push_back(rec);
      rec.clear();
      field.clear();
      field_started = false;
      i += (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ? 2 : 1;
    } else {
      field += c;
      field_started = true;
      i++;
    }
  }
  EXPECT_FALSE(quoted) << "unterminated quoted field";
  if (field_started || !rec.empty()) {
    rec.push_back(field);
    records.push_back(rec);
  }
  return records;
}

// "" if `doc` is a well-formed XML document as report.h writes them (an XML
// declaration, then one root element; elements with double-quoted
// attributes, text, and the five predefined entities and character
// references), else what is wrong with it.
std::string xml_problem(const std::string& doc) {
  std::vector<std::string> open;
  size_t i = 0;
  bool root_seen = false;
  auto name_char = [](char c) {
    return isalnum(static_cast<unsigned char>(c)) || c == '-' || c == ':' || c == '_';
  };
  auto check_entities = [](const std::string& s, size_t at) -> std::string {
    for (size_t k = 0; k < s.size(); k++) {
      if (s[k] == '<') return "'<' in text or attribute at " + std::to_string(at + k);
      if (s[k] != '&') continue;
      size_t semi = s.find(';', k);
      if (semi == std::string::npos) return "unterminated '&' at " + std::to_string(at + k);
      std::string e = s.substr(k + 1, semi - k - 1);
      bool ok = e == "amp" || e == "lt" || e == "gt" || e == "quot" || e == "apos" ||
                (e.size() > 1 && e[0] == '#' && e.find_first_not_of("0123456789", 1) == std::string::npos);
      if (!ok) return "unknown entity '&" + e + ";' at " + std::to_string(at + k);
    }
    return "";
  };
  if (doc.rfind("<?xml ", 0) == 0) {
    size_t e = doc.find("?>");
    if (e == std::string::npos) return "unterminated XML declaration";
    i = e + 2;
  }
  while (i < doc.size()) {
    size_t lt = doc.find('<', i);
    std::string text = doc.substr(i, lt == std::string::npos ? std::string::npos : lt - i);
    if (std::string p = check_entities(text, i); !p.empty()) return p;
    if (open.empty() && text.find_first_not_of(" \t\r\n") != std::string::npos)
      return "text outside the root element";
    if (lt == std::string::npos) break;
    i = lt + 1;
    bool closing = i < doc.size() && doc[i] == '/';
    if (closing) i++;
    size_t n0 = i;
    while (i < doc.size() && name_char(doc[i])) i++;
    std::string name = doc.substr(n0, i - n0);
    if (name.empty()) return "a tag without a name at " + std::to_string(n0);
    if (closing) {
      if (i >= doc.size() || doc[i] != '>') return "bad closing tag </" + name;
      if (open.empty() || open.back() != name) {
        return "</" + name + "> closes " + (open.empty() ? std::string("nothing") : "<" + open.back() + ">");
      }
      open.pop_back();
      i++;
      continue;
    }
    if (open.empty() && root_seen) return "a second root element <" + name + ">";
    root_seen = true;
    // Attributes: name="value".
    std::vector<std::string> attrs;
    for (;;) {
      while (i < doc.size() && isspace(static_cast<unsigned char>(doc[i]))) i++;
      if (i >= doc.size()) return "unterminated tag <" + name;
      if (doc[i] == '>') {
        open.push_back(name);
        i++;
        break;
      }
      if (doc[i] == '/') {
        if (i + 1 >= doc.size() || doc[i + 1] != '>') return "bad empty tag <" + name;
        i += 2;
        break;
      }
      size_t a0 = i;
      while (i < doc.size() && name_char(doc[i])) i++;
      std::string attr = doc.substr(a0, i - a0);
      if (attr.empty() || i + 1 >= doc.size() || doc[i] != '=' || doc[i + 1] != '"') {
        return "bad attribute in <" + name + "> at " + std::to_string(a0);
      }
      for (const std::string& a : attrs) {
        if (a == attr) return "attribute " + attr + " twice in <" + name + ">";
      }
      attrs.push_back(attr);
      size_t v0 = i + 2, v1 = doc.find('"', v0);
      if (v1 == std::string::npos) return "unterminated attribute value in <" + name + ">";
      if (std::string p = check_entities(doc.substr(v0, v1 - v0), v0); !p.empty()) return p;
      i = v1 + 1;
    }
  }
  if (!open.empty()) return "<" + open.back() + "> never closed";
  if (!root_seen) return "no root element";
  return "";
}

// How many times `needle` occurs in `hay`.
size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) n++;
  return n;
}

// A Samples-like type for Report::add (bench_common.h's needs weft).
struct FakeSamples {
  std::vector<double> v;
  bool empty() const { return v.empty(); }
  double median() const { return v.empty() ? 0 : v[v.size() / 2]; }
  double min() const { return v.empty() ? 0 : v.front(); }
  double max() const { return v.empty() ? 0 : v.back(); }
};

// A fresh directory under TMPDIR (or /tmp), removed with its files by the
// destructor.
struct TempDir {
  std::string path;
  TempDir() {
    const char* t = getenv("TMPDIR");
    std::string tmpl = std::string(t != nullptr && *t != '\0' ? t : "/tmp") + "/bench_report_test.XXXXXX";
    std::vector<char> b(tmpl.begin(), tmpl.end());
    b.push_back('\0');
    if (mkdtemp(b.data()) == nullptr) ADD_FAILURE() << "mkdtemp: " << strerror(errno);
    path = b.data();
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

std::string read_all(const std::string& p) {
  std::string s;
  if (FILE* f = fopen(p.c_str(), "r")) {
    char b[4096];
    size_t n;
    while ((n = fread(b, 1, sizeof b, f)) > 0) s.append(b, n);
    fclose(f);
  }
  return s;
}

// A report like a micro-benchmark's: three operations, weft and NPTL, the
// NPTL side missing for one of them (5 bars), values within 10x.
Report micro_report() {
  Report r("test_bench", "weft 0.1.0, klt backend clone; 2 CPUs; kernel 6.1");
  r.add("runtime", "weft 1 worker", "yield", "ns/op", 40, 38, 45, 3);
  r.add("runtime", "NPTL", "yield", "ns/op", 300, 280, 350, 3);
  r.add("runtime", "weft 1 worker", "spawn+join", "ns/op", 120, 110, 130, 3);
  r.add("runtime", "NPTL", "spawn+join", "ns/op", 250, 240, 260, 3);
  r.add("runtime", "weft 1 worker", "mutex", "ns/op", 25, 25, 25, 3);
  r.add("runtime", "weft 1 worker", "idle", "KiB/ULT", 3.5, 3.4, 3.6, 3);  // another unit: not in the figure
  r.add_figure({"ns", "per operation", Figure::kBars, {"runtime"}, {"ns/op"}, "ns per operation", ""});
  return r;
}

// ---------------------------------------------------------------------------
// CSV.

TEST(BenchReportCsv, FieldsAreQuotedOnlyWhenTheyMustBe) {
  EXPECT_EQ(csv_field("plain text"), "plain text");
  EXPECT_EQ(csv_field(""), "");
  EXPECT_EQ(csv_field("a,b"), "\"a,b\"");
  EXPECT_EQ(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(csv_field("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(csv_field("cr\r"), "\"cr\r\"");
  EXPECT_EQ(csv_number(1234.5), "1234.5");
  EXPECT_EQ(csv_number(NAN), "");
}

TEST(BenchReportCsv, EveryRowReadsBackFieldForField) {
  Report r("prog, \"quoted\"", "machine");
  r.add("echo", "weft (uring)", "1000", "req/s", 51234.5, 50000, 52000.25, 3);
  r.add("echo, details", "NPTL \"64 KiB\"", "yield, 1 worker", "p99 us", 0.125, 0.1, 0.2, 2);
  r.add("t", "multi\nline", "x", "ns/op", 1e9, 1e9, 1e9, 1);
  r.add_value("t", "weft", "sum", "count", 42, 7);
  const std::vector<std::vector<std::string>> recs = parse_csv(r.csv());
  ASSERT_EQ(recs.size(), 5u);
  EXPECT_EQ(recs[0], (std::vector<std::string>{"program", "table", "series", "x", "metric", "median", "min",
                                               "max", "rounds"}));
  EXPECT_EQ(recs[1], (std::vector<std::string>{"prog, \"quoted\"", "echo", "weft (uring)", "1000", "req/s",
                                               "51234.5", "50000", "52000.25", "3"}));
  EXPECT_EQ(recs[2], (std::vector<std::string>{"prog, \"quoted\"", "echo, details", "NPTL \"64 KiB\"",
                                               "yield, 1 worker", "p99 us", "0.125", "0.1", "0.2", "2"}));
  EXPECT_EQ(recs[3][2], "multi\nline");
  EXPECT_EQ(recs[3][5], "1000000000");
  EXPECT_EQ(recs[4], (std::vector<std::string>{"prog, \"quoted\"", "t", "weft", "sum", "count", "42", "42",
                                               "42", "7"}));
}

TEST(BenchReportCsv, SamplesAreRecordedAndTheSameKeyReplaces) {
  Report r("p", "m");
  r.add("t", "weft", "x", "ns", FakeSamples{{1, 2, 9}});
  r.add("t", "weft", "y", "ns", FakeSamples{});  // not run: no row
  r.add("t", "NPTL", "x", "ns", FakeSamples{{5, 6, 7}});
  r.add("t", "NPTL", "x", "ns", FakeSamples{{5, 6, 7}});  // printed twice: one row
  r.add("t", "weft", "x", "ns", FakeSamples{{3, 4, 5, 6, 8}});
  ASSERT_EQ(r.rows().size(), 2u);
  EXPECT_EQ(r.rows()[0].series, "weft");
  EXPECT_EQ(r.rows()[0].median, 5);
  EXPECT_EQ(r.rows()[0].min, 3);
  EXPECT_EQ(r.rows()[0].max, 8);
  EXPECT_EQ(r.rows()[0].rounds, 5);
  EXPECT_EQ(r.rows()[1].series, "NPTL");
}

// ---------------------------------------------------------------------------
// SVG.

TEST(BenchReportSvg, BarsAreWellFormedWithABarPerRowAndALegendEntryPerSeries) {
  Report r = micro_report();
  r.set_note("3 rounds (--quick) & <more>");
  std::string svg = r.svg(r.figures()[0]);
  ASSERT_FALSE(svg.empty());
  EXPECT_EQ(xml_problem(svg), "") << svg;
  EXPECT_EQ(count(svg, "class=\"bar\""), 5u);
  EXPECT_EQ(count(svg, "<rect"), 1u + 5u + 2u);  // background, bars, legend squares
  EXPECT_EQ(count(svg, "class=\"legend\""), 2u);
  EXPECT_NE(svg.find(">weft 1 worker</text>"), std::string::npos);
  EXPECT_NE(svg.find(">NPTL</text>"), std::string::npos);
  EXPECT_EQ(count(svg, "class=\"category\""), 3u);
  EXPECT_NE(svg.find("test_bench: per operation"), std::string::npos);  // the title names the program
  EXPECT_NE(svg.find("klt backend clone"), std::string::npos);        // and the machine
  EXPECT_NE(svg.find("ns per operation"), std::string::npos);         // the axis title
  EXPECT_NE(svg.find("3 rounds (--quick) &amp; &lt;more&gt;"), std::string::npos);
  EXPECT_EQ(svg.find("log scale"), std::string::npos);  // 25..350: 14x
  // Whiskers for the bars whose rounds differ (not the 25/25/25 one).
  EXPECT_EQ(count(svg, "class=\"whisker\""), 4u);
}

TEST(BenchReportSvg, SpecialCharactersAreEscapedEverywhere) {
  Report r("a<b>&\"c\"", "m & m's <machine>");
  r.add("t", "weft & \"NPTL\" <x>", "op & <op>", "ns", 1, 1, 2, 2);
  r.add_figure({"f", "title & <more>", Figure::kBars, {}, {}, "ns & \"us\"", ""});
  std::string svg = r.svg(r.figures()[0]);
  EXPECT_EQ(xml_problem(svg), "") << svg;
  EXPECT_NE(svg.find("weft &amp; &quot;NPTL&quot; &lt;x&gt;"), std::string::npos);
  EXPECT_NE(svg.find("m &amp; m&apos;s &lt;machine&gt;"), std::string::npos);
  // The checker catches what it must: a raw '&', an unclosed or crossed tag.
  EXPECT_NE(xml_problem("<svg><text>a & b</text></svg>"), "");
  EXPECT_NE(xml_problem("<svg><g></svg>"), "");
  EXPECT_NE(xml_problem("<svg><g><text></g></text></svg>"), "");
  EXPECT_NE(xml_problem("<svg a=\"1\" a=\"2\"/>"), "");
  EXPECT_EQ(xml_problem("<?xml version=\"1.0\"?>\n<svg a=\"&lt;\"><g/><t>x &amp; y</t></svg>\n"), "");
}

TEST(BenchReportSvg, LinesHaveAPolylinePerSeriesAndAPointPerRow) {
  Report r("echo_bench", "machine");
  const char* servers[] = {"weft (uring)", "NPTL", "epoll loop"};
  double base = 40000;
  for (const char* s : servers) {
    r.add("echo", s, "50", "req/s", base, base * 0.9, base * 1.1, 2);
    r.add("echo", s, "1000", "req/s", base * 0.8, base * 0.7, base * 0.9, 2);
    r.add("echo", s, "50", "p99 us", 100, 90, 110, 2);
    base += 10000;
  }
  r.add("echo", "NPTL", "all", "req/s", 1, 1, 1, 1);  // not a number: not on a line
  r.add_figure({"rps", "echo req/s", Figure::kLines, {"echo"}, {"req/s"}, "req/s", "connections"});
  std::string svg = r.svg(r.figures()[0]);
  ASSERT_FALSE(svg.empty());
  EXPECT_EQ(xml_problem(svg), "") << svg;
  EXPECT_EQ(count(svg, "<polyline"), 3u);
  EXPECT_EQ(count(svg, "class=\"point\""), 6u);
  EXPECT_EQ(count(svg, "class=\"legend\""), 3u);
  for (const char* s : servers) EXPECT_NE(svg.find(std::string(">") + s + "</text>"), std::string::npos) << s;
  EXPECT_NE(svg.find(">connections, log scale</text>"), std::string::npos);  // 50..1000: 20x
  EXPECT_NE(svg.find(">req/s</text>"), std::string::npos);                   // 28k..70k: linear
  EXPECT_NE(svg.find(">1000</text>"), std::string::npos);  // the x ticks are the connection counts
  EXPECT_NE(svg.find(">50</text>"), std::string::npos);

  // Two metrics in one figure: a line for each series and metric.
  r.add_figure({"lat", "latency", Figure::kLines, {"echo"}, {"req/s", "p99 us"}, "mixed", "connections"});
  svg = r.svg(r.figures()[1]);
  EXPECT_EQ(xml_problem(svg), "") << svg;
  EXPECT_EQ(count(svg, "<polyline"), 6u);
  EXPECT_NE(svg.find(">NPTL (p99 us)</text>"), std::string::npos);

  // Connection counts within 10x: a linear x axis.
  Report near("echo_bench", "machine");
  near.add("echo", "NPTL", "100", "req/s", 1, 1, 1, 1);
  near.add("echo", "NPTL", "500", "req/s", 2, 2, 2, 1);
  near.add_figure({"rps", "echo req/s", Figure::kLines, {}, {}, "req/s", "connections"});
  svg = near.svg(near.figures()[0]);
  EXPECT_EQ(xml_problem(svg), "") << svg;
  EXPECT_NE(svg.find(">connections</text>"), std::string::npos);
}

TEST(BenchReportSvg, ValueAxisIsLogarithmicExactlyWhenValuesSpanMoreThan100x) {
  EXPECT_FALSE(wants_log_scale(1, 100));
  EXPECT_TRUE(wants_log_scale(1, 100.5));
  EXPECT_TRUE(wants_log_scale(25, 30000));
  EXPECT_FALSE(wants_log_scale(0, 30000));  // no positive minimum: linear
  report_svg::Axis log = report_svg::make_axis(0, 25, 30000, true);
  EXPECT_TRUE(log.log);
  EXPECT_EQ(log.lo, 10);
  EXPECT_EQ(log.hi, 100000);
  EXPECT_DOUBLE_EQ(log.pos(1000, 0, 400), 200);
  report_svg::Axis lin = report_svg::make_axis(0, 25, 350, true);
  EXPECT_FALSE(lin.log);
  EXPECT_EQ(lin.lo, 0);
  EXPECT_GE(lin.hi, 350);
  EXPECT_EQ(lin.ticks.front(), 0);
  EXPECT_GE(lin.ticks.back(), 350);

  Report r = micro_report();
  r.add("runtime", "NPTL", "mutex", "ns/op", 30000, 29000, 31000, 3);  // 25 .. 31000: 1240x
  std::string svg = r.svg(r.figures()[0]);
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_NE(svg.find("ns per operation, log scale"), std::string::npos);
  EXPECT_EQ(count(svg, "class=\"bar\""), 6u);
  EXPECT_NE(svg.find(">10</text>"), std::string::npos);  // ticks: the decades from 10 to 100k
  EXPECT_NE(svg.find(">100k</text>"), std::string::npos);
  EXPECT_EQ(report_svg::tick_label(2500), "2.5k");
  EXPECT_EQ(report_svg::tick_label(0.5), "0.5");
  EXPECT_EQ(report_svg::tick_label(1.5e6), "1.5M");
}

TEST(BenchReportSvg, AFigureWithoutDataIsNotWritten) {
  Report r = micro_report();
  r.add_figure({"none", "nothing", Figure::kBars, {"no such table"}, {}, "ns", ""});
  r.add_figure({"nolines", "nothing", Figure::kLines, {"runtime"}, {"ns/op"}, "ns", "x"});  // x not numeric
  EXPECT_EQ(r.svg(r.figures()[1]), "");
  EXPECT_EQ(r.svg(r.figures()[2]), "");
  TempDir d;
  std::vector<std::string> written;
  std::string error;
  ASSERT_TRUE(r.write(d.path, &written, &error)) << error;
  EXPECT_EQ(written.size(), 2u);  // the CSV and the one figure with data
  EXPECT_TRUE(exists(d.path + "/test_bench-ns.svg"));
  EXPECT_FALSE(exists(d.path + "/test_bench-none.svg"));
  EXPECT_FALSE(exists(d.path + "/test_bench-nolines.svg"));

  Report empty("empty_bench", "m");  // nothing recorded: the CSV has its header only
  empty.add_figure({"f", "t", Figure::kBars, {}, {}, "ns", ""});
  written.clear();
  ASSERT_TRUE(empty.write(d.path, &written, &error)) << error;
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(read_all(written[0]), "program,table,series,x,metric,median,min,max,rounds\n");
}

// ---------------------------------------------------------------------------
// Output directory.

TEST(BenchReportFiles, WriteCreatesTheDirectoryAndNamesAbsolutePaths) {
  TempDir d;
  Report r = micro_report();
  std::vector<std::string> written;
  std::string error;
  const std::string dir = d.path + "/a/b/c";
  ASSERT_TRUE(r.write(dir, &written, &error)) << error;
  ASSERT_EQ(written.size(), 2u);
  char real[PATH_MAX];
  ASSERT_NE(realpath(dir.c_str(), real), nullptr);
  EXPECT_EQ(written[0], std::string(real) + "/test_bench.csv");
  EXPECT_EQ(written[1], std::string(real) + "/test_bench-ns.svg");
  EXPECT_EQ(read_all(written[0]), r.csv());
  EXPECT_EQ(read_all(written[1]), r.svg(r.figures()[0]));
}

TEST(BenchReportFiles, AnUnusableDirectoryIsAnErrorNamingThePath) {
  TempDir d;
  const std::string file = d.path + "/plain_file";
  FILE* f = fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fclose(f);
  Report r = micro_report();
  std::vector<std::string> written;
  std::string error;
  EXPECT_FALSE(r.write(file + "/sub", &written, &error));
  EXPECT_TRUE(written.empty());
  EXPECT_NE(error.find(file), std::string::npos) << error;
  EXPECT_NE(error.find(strerror(ENOTDIR)), std::string::npos) << error;

  // finish(): the lines of the files written on stdout, the error on
  // stderr, status 1.
  fflush(stdout);
  fflush(stderr);
  const std::string out_path = d.path + "/stdout", err_path = d.path + "/stderr";
  int saved_out = dup(1), saved_err = dup(2);
  int out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  int err_fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(out_fd, 0);
  ASSERT_GE(err_fd, 0);
  dup2(out_fd, 1);
  dup2(err_fd, 2);
  int bad = r.finish(file + "/sub");
  int good = r.finish(d.path + "/ok");
  fflush(stdout);
  fflush(stderr);
  dup2(saved_out, 1);
  dup2(saved_err, 2);
  close(saved_out);
  close(saved_err);
  close(out_fd);
  close(err_fd);
  EXPECT_EQ(bad, 1);
  EXPECT_EQ(good, 0);
  const std::string err = read_all(err_path), out = read_all(out_path);
  EXPECT_NE(err.find("test_bench: cannot create directory " + file), std::string::npos) << err;
  char real[PATH_MAX];
  ASSERT_NE(realpath((d.path + "/ok").c_str(), real), nullptr);
  EXPECT_EQ(out, "data: " + std::string(real) + "/test_bench.csv\nplot: " + std::string(real) +
                     "/test_bench-ns.svg\n");
}

TEST(BenchReportFiles, DefaultDirectoryIsResultsNextToTheExecutable) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  ASSERT_GT(n, 0);
  exe[n] = '\0';
  std::string e = exe;
  EXPECT_EQ(default_out_dir(), e.substr(0, e.rfind('/')) + "/results");
}

// ---------------------------------------------------------------------------
// Progress.

// Runs `fn` with stderr (descriptor 2) on `fd`, then restores it.
template <class F>
void with_stderr_on(int fd, F fn) {
  fflush(stderr);
  int saved = dup(2);
  ASSERT_GE(saved, 0);
  dup2(fd, 2);
  fn();
  dup2(saved, 2);
  close(saved);
}

// What is waiting on non-blocking descriptor `fd`.
std::string drain(int fd) {
  std::string s;
  char b[1024];
  for (;;) {
    ssize_t n = read(fd, b, sizeof b);
    if (n <= 0) break;
    s.append(b, static_cast<size_t>(n));
  }
  return s;
}

TEST(BenchReportProgress, WritesNothingWhenStderrIsNotATerminal) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
  bool active = true;
  with_stderr_on(p[1], [&] {
    Progress progress("prog");
    active = progress.active();
    progress.round(1, 3, "echo: weft (uring) C=%d", 1000);
    progress.show("anything");
    progress.clear();
    progress.round(2, 3, "left shown: the destructor would erase it");
    erase_progress();
  });
  close(p[1]);
  EXPECT_FALSE(active);
  EXPECT_EQ(drain(p[0]), "");
  close(p[0]);
  EXPECT_EQ(g_progress, nullptr);
}

TEST(BenchReportProgress, RewritesOneLineOnATerminalAndErasesIt) {
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) GTEST_SKIP() << "no pseudo-terminal here";
  int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(slave, 0);
  // A 60-column terminal.
  struct winsize ws{};
  ws.ws_col = 60;
  ws.ws_row = 24;
  ioctl(slave, TIOCSWINSZ, &ws);
  fcntl(master, F_SETFL, O_NONBLOCK);
  std::string first, cut, cleared, at_exit, erased;
  bool active = false;
  with_stderr_on(slave, [&] {
    {
      Progress progress("echo_bench");
      active = progress.active();
      progress.round(2, 3, "weft (uring) C=%d", 1000);
      first = drain(master);
      progress.show("%s", std::string(100, 'x').c_str());
      cut = drain(master);
      progress.clear();
      cleared = drain(master);
      progress.clear();  // nothing shown: nothing written
      erased = drain(master);
      progress.show("shown at the end");
      drain(master);
    }
    at_exit = drain(master);
  });
  close(slave);
  close(master);
  EXPECT_TRUE(active);
  EXPECT_EQ(first, "\r\033[K[round 2/3] echo_bench: weft (uring) C=1000");
  EXPECT_EQ(cut, "\r\033[K" + std::string(59, 'x'));  // one column less than the terminal's
  EXPECT_EQ(cleared, "\r\033[K");
  EXPECT_EQ(erased, "");
  EXPECT_EQ(at_exit, "\r\033[K");
}

}  // namespace
}  // namespace bench
