// TlsContext: bad files say which file and why; a changed file is re-read; a broken rewrite
// keeps the previous material. Certificates come from the openssl CLI.
#include "proxy/tls/tls_context.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <optional>
#include <string>

#include "memzone/ops/tls_files.h"

namespace memzone::tls {
namespace {

class TlsContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/memzone-tls-unit-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    makeCert("a", 10);
  }
  void TearDown() override { system(("rm -rf " + dir_).c_str()); }

  // A self-signed EC certificate valid for `days`, as dir/name.pem and dir/name.key.
  void makeCert(const std::string& name, int days) {
    std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
        "-nodes -subj /CN=" +
        name + " -days " + std::to_string(days) + " -keyout " + dir_ + "/" + name + ".key -out " +
        dir_ + "/" + name + ".pem >/dev/null 2>&1";
    ASSERT_EQ(system(cmd.c_str()), 0);
  }
  std::string path(const std::string& file) const { return dir_ + "/" + file; }

  std::string dir_;
};

TEST_F(TlsContextTest, BuildsAndItsFileReportsExpiry) {
  std::string error;
  auto context =
      TlsContext::create(Role::kServer, {path("a.pem"), path("a.key"), "", Verify::kNone}, error);
  ASSERT_TRUE(context) << error;
  EXPECT_TRUE(context->current());
  // The expiry metric reads the file itself (certificate_expiry.h), one source per process.
  std::optional<int64_t> not_after = ops::earliestNotAfter(path("a.pem"));
  ASSERT_TRUE(not_after);
  int64_t left = *not_after - static_cast<int64_t>(std::time(nullptr));
  EXPECT_GT(left, 9 * 86400);
  EXPECT_LE(left, 10 * 86400);
}

TEST_F(TlsContextTest, BadFilesSayWhich) {
  makeCert("b", 10);
  struct Case {
    TlsFiles files;
    std::string error;
  };
  const Case cases[] = {
      {{path("missing.pem"), path("a.key"), "", Verify::kNone},
       path("missing.pem") + ": cannot load certificate chain"},
      {{path("a.pem"), path("b.key"), "", Verify::kNone}, path("b.key") + ": cannot load"},
      {{path("a.pem"), path("a.key"), path("nope.pem"), Verify::kRequire},
       path("nope.pem") + ": cannot load CA certificates"},
      {{"", "", "", Verify::kNone}, "a certificate and key are required"},
  };
  for (const Case& c : cases) {
    std::string error;
    EXPECT_FALSE(TlsContext::create(Role::kServer, c.files, error));
    EXPECT_EQ(error.rfind(c.error, 0), 0u) << error;
  }
}

TEST_F(TlsContextTest, ReloadsChangedFilesAndKeepsTheOldOnABrokenOne) {
  std::string error;
  auto context =
      TlsContext::create(Role::kServer, {path("a.pem"), path("a.key"), "", Verify::kNone}, error);
  ASSERT_TRUE(context);
  bool changed = true;
  EXPECT_TRUE(context->reloadIfChanged(changed, error));
  EXPECT_FALSE(changed);
  auto before = context->current();

  makeCert("c", 20);  // a new pair replaces the files (new inodes, as a Secret swap does)
  ASSERT_EQ(rename(path("c.pem").c_str(), path("a.pem").c_str()), 0);
  ASSERT_EQ(rename(path("c.key").c_str(), path("a.key").c_str()), 0);
  EXPECT_TRUE(context->reloadIfChanged(changed, error)) << error;
  EXPECT_TRUE(changed);
  EXPECT_NE(context->current(), before);
  EXPECT_EQ(context->reloads(), 1u);
  EXPECT_GT(ops::earliestNotAfter(path("a.pem")).value_or(0) - std::time(nullptr), 19 * 86400);

  auto good = context->current();
  std::ofstream(path("a.key")) << "not a key\n";  // a half-written rotation
  EXPECT_FALSE(context->reloadIfChanged(changed, error));
  EXPECT_NE(error.find("a.key"), std::string::npos) << error;
  EXPECT_EQ(context->current(), good);
  EXPECT_EQ(context->reloadFailures(), 1u);
}

}  // namespace
}  // namespace memzone::tls
