// Issue 15's configuration: client TLS flags and listeners, the pools' backend `tls:` block.
#include <gtest/gtest.h>

#include "proxy/config/proxy_flags.h"
#include "proxy/config/topology_file.h"

namespace memzone::config {
namespace {

FlagsResult parse(std::vector<std::string> args) {
  args.insert(args.begin(), {"--config", "t.yaml"});
  return parseProxyFlags(args);
}

TEST(TlsFlags, ListenersSideBySide) {
  std::vector<ListenerSpec> l;
  EXPECT_EQ(parseListeners("0.0.0.0:11211,tls:0.0.0.0:11212", l), "");
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0], (ListenerSpec{"0.0.0.0:11211", false}));
  EXPECT_EQ(l[1], (ListenerSpec{"0.0.0.0:11212", true}));
  EXPECT_EQ(parseListeners("tls:[::1]:5", l), "");
  EXPECT_EQ(l[0], (ListenerSpec{"[::1]:5", true}));
  for (const char* bad : {"", ",", "tls:", "host", "a:1,,b:2", "a:1,a:1", "a:"}) {
    EXPECT_NE(parseListeners(bad, l), "") << bad;
  }
}

TEST(TlsFlags, DefaultsArePlaintext) {
  FlagsResult r = parse({});
  ASSERT_EQ(r.error, "");
  ASSERT_EQ(r.options.listeners.size(), 1u);
  EXPECT_FALSE(r.options.listeners[0].tls);
  EXPECT_EQ(r.options.tls.handshake_timeout_ms, 5000u);
}

TEST(TlsFlags, GoodCombinations) {
  FlagsResult r =
      parse({"--listen", "1.2.3.4:1,tls:1.2.3.4:2", "--tls-cert", "c", "--tls-key", "k"});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.options.tls.verify, TlsVerify::kNone);
  r = parse(
      {"--listen", "tls:1.2.3.4:2", "--tls-cert", "c", "--tls-key", "k", "--tls-client-ca", "ca"});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.options.tls.verify, TlsVerify::kRequire);  // a CA alone means require
  r = parse({"--listen", "tls:1.2.3.4:2", "--tls-cert", "c", "--tls-key", "k", "--tls-client-ca",
             "ca", "--tls-verify", "optional", "--tls-handshake-timeout-ms", "250"});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.options.tls.verify, TlsVerify::kOptional);
  EXPECT_EQ(r.options.tls.handshake_timeout_ms, 250u);
}

TEST(TlsFlags, BadCombinationsSayWhy) {
  struct Case {
    std::vector<std::string> args;
    const char* error;
  };
  const Case cases[] = {
      {{"--listen", "tls:1.2.3.4:2"}, "needs --tls-cert and --tls-key"},
      {{"--listen", "tls:1.2.3.4:2", "--tls-cert", "c"}, "needs --tls-cert and --tls-key"},
      {{"--tls-cert", "c", "--tls-key", "k"}, "need a tls: listener"},
      {{"--listen", "tls:1.2.3.4:2", "--tls-cert", "c", "--tls-key", "k", "--tls-verify",
        "require"},
       "needs --tls-client-ca"},
      {{"--listen", "tls:1.2.3.4:2", "--tls-cert", "c", "--tls-key", "k", "--tls-client-ca", "ca",
        "--tls-verify", "none"},
       "would not be used"},
      {{"--tls-verify", "maybe"}, "must be none, optional or require"},
      {{"--tls-handshake-timeout-ms", "0"}, "from 10 to 600000"},
  };
  for (const Case& c : cases) {
    FlagsResult r = parse(c.args);
    EXPECT_NE(r.error.find(c.error), std::string::npos) << r.error;
  }
}

TEST(BackendTlsYaml, ParsedIntoThePoolSpec) {
  auto r = parseTopologyYaml(R"(pools:
  - name: main
    zones:
      a: ["127.0.0.1:1"]
    tls:
      caFile: /etc/ca.pem
      certFile: /etc/c.pem
      keyFile: /etc/k.pem
      serverName: memcached.example
      verify: false
  - name: plain
    zones:
      b: ["127.0.0.1:2"]
    tls: {enabled: false, caFile: /x}
)",
                             "t.yaml");
  ASSERT_TRUE(r.errors.empty()) << r.errors[0];
  const topology::BackendTlsSpec& t = r.spec.pools[0].tls;
  EXPECT_TRUE(t.enabled);  // a tls block is on unless it says enabled: false
  EXPECT_EQ(t.ca_file, "/etc/ca.pem");
  EXPECT_EQ(t.cert_file, "/etc/c.pem");
  EXPECT_EQ(t.key_file, "/etc/k.pem");
  EXPECT_EQ(t.server_name, "memcached.example");
  EXPECT_FALSE(t.verify);
  EXPECT_FALSE(r.spec.pools[1].tls.enabled);
  auto built = topology::buildTopology(r.spec);
  ASSERT_TRUE(built.topology) << built.error;
  EXPECT_TRUE(built.topology->pools[0].tls.enabled);
}

TEST(BackendTlsYaml, DisabledIsTheSameTopologyAsNone) {
  auto none =
      parseTopologyYaml("pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\n", "t.yaml");
  auto off = parseTopologyYaml(
      "pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\n    tls: {enabled: false}\n",
      "t.yaml");
  auto on = parseTopologyYaml(
      "pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\n    tls: {enabled: true}\n",
      "t.yaml");
  EXPECT_EQ(none.spec.version, off.spec.version);
  EXPECT_NE(none.spec.version, on.spec.version);
}

TEST(BackendTlsYaml, BadBlocksNameLineAndField) {
  const std::pair<const char*, const char*> cases[] = {
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\n    tls:\n      caFlie: x\n",
       "t.yaml:6: pools[0].tls.caFlie: unknown field"},
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\n    tls:\n      certFile: x\n",
       "t.yaml:6: pools[0].tls: certFile and keyFile go together"},
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\n    tls:\n      verify: "
       "maybe\n",
       "t.yaml:6: pools[0].tls.verify: must be true or false"},
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\n    tls:\n      serverName: "
       "\"a b\"\n",
       "t.yaml:6: pools[0].tls.serverName: must be a DNS name"},
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\n    tls: yes\n",
       "t.yaml:5: pools[0].tls: must be a mapping"},
  };
  for (const auto& [text, error] : cases) {
    auto r = parseTopologyYaml(text, "t.yaml");
    ASSERT_FALSE(r.errors.empty()) << text;
    EXPECT_NE(r.errors[0].find(error), std::string::npos) << r.errors[0];
  }
}

TEST(BackendTlsTopology, OneServerOneTlsSetting) {
  // A server's connection serves every pool it is in: their TLS settings must agree.
  topology::TopologySpec spec;
  topology::PoolSpec one;
  one.name = "one";
  one.zones = {{"a", {{"127.0.0.1:1", 1}}}};
  one.tls.enabled = true;
  one.tls.ca_file = "/ca.pem";
  topology::PoolSpec two = one;
  two.name = "two";
  spec.pools = {one, two};
  EXPECT_TRUE(topology::buildTopology(spec).topology);
  spec.pools[1].tls = {};
  auto built = topology::buildTopology(spec);
  EXPECT_FALSE(built.topology);
  EXPECT_NE(built.error.find("127.0.0.1:1 is also in pool one with other TLS settings"),
            std::string::npos)
      << built.error;
}

}  // namespace
}  // namespace memzone::config
