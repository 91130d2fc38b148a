// The controller's TLS flags and its proxy identity allow-list.
#include <gtest/gtest.h>

#include "controlplane/config/controller_flags.h"
#include "controlplane/server/server_credentials.h"

namespace memzone::controlplane {
namespace {

const std::vector<std::string> kBase = {"--source", "file", "--config", "t.yaml"};

ControllerFlags parse(std::vector<std::string> extra) {
  std::vector<std::string> args = kBase;
  args.insert(args.end(), extra.begin(), extra.end());
  return parseControllerFlags(args);
}

TEST(ControllerTlsFlags, ParsesTheSet) {
  auto r = parse({"--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem",
                  "--tls-allowed-identities", "spiffe://td/ns/m/sa/*,proxy.memzone.svc",
                  "--tls-reload-interval", "2s"});
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.options.tls_cert, "c.pem");
  EXPECT_EQ(r.options.tls_key, "k.pem");
  EXPECT_EQ(r.options.tls_client_ca, "ca.pem");
  EXPECT_EQ(r.options.tls_allowed_identities,
            (std::vector<std::string>{"spiffe://td/ns/m/sa/*", "proxy.memzone.svc"}));
  EXPECT_EQ(r.options.tls_reload_interval_ms, 2000u);
  EXPECT_TRUE(parse({}).options.tls_cert.empty());  // plaintext is still possible
}

TEST(ControllerTlsFlags, HalfAConfigurationIsAnError) {
  const std::string together =
      "--tls-cert, --tls-key and --tls-client-ca go together (mutual TLS on the topology "
      "stream); --tls-allowed-identities needs them";
  EXPECT_EQ(parse({"--tls-cert", "c", "--tls-key", "k"}).error, together);
  EXPECT_EQ(parse({"--tls-client-ca", "ca"}).error, together);
  EXPECT_EQ(parse({"--tls-allowed-identities", "x"}).error, together);
  EXPECT_EQ(parse({"--tls-allowed-identities", "a,,b"}).error,
            "--tls-allowed-identities: empty entry in \"a,,b\"");
  EXPECT_EQ(parse({"--tls-reload-interval", "500ms"}).error,
            "--tls-reload-interval must be whole seconds, at least 1s (e.g. 10s)");
}

TEST(IdentityAllowList, ExactNamesAndGlobs) {
  std::vector<std::string> allowed = {"spiffe://td/ns/memzone/sa/*", "proxy.memzone.svc"};
  EXPECT_TRUE(identityAllowed(allowed, {"spiffe://td/ns/memzone/sa/memzone-proxy"}));
  EXPECT_TRUE(identityAllowed(allowed, {"other.example", "proxy.memzone.svc"}));
  EXPECT_FALSE(identityAllowed(allowed, {"spiffe://td/ns/default/sa/app"}));
  EXPECT_FALSE(identityAllowed(allowed, {"proxy.memzone.svc.evil.example"}));
  EXPECT_FALSE(identityAllowed(allowed, {}));
  EXPECT_TRUE(identityAllowed({"*.proxies.memzone.svc"}, {"a.b.proxies.memzone.svc"}));
}

}  // namespace
}  // namespace memzone::controlplane
