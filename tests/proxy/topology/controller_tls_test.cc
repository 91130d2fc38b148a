// The proxy's TLS flags for the controller stream, and its check of the controller's name.
#include <gtest/gtest.h>

#include "memzone/ops/tls_observer.h"
#include "proxy/config/proxy_flags.h"
#include "proxy/topology/controller_credentials.h"

namespace memzone {
namespace {

config::FlagsResult parse(std::vector<std::string> extra) {
  std::vector<std::string> args = {"--controller", "ctl.memzone.svc:18000"};
  args.insert(args.end(), extra.begin(), extra.end());
  return config::parseProxyFlags(args);
}

TEST(ProxyControllerTlsFlags, ParsesTheSet) {
  auto r =
      parse({"--controller-ca", "ca.pem", "--controller-tls-cert", "c.pem", "--controller-tls-key",
             "k.pem", "--controller-server-name", "ctl", "--controller-tls-reload-interval", "3s"});
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.options.controller_ca, "ca.pem");
  EXPECT_EQ(r.options.controller_tls_cert, "c.pem");
  EXPECT_EQ(r.options.controller_tls_key, "k.pem");
  EXPECT_EQ(r.options.controller_server_name, "ctl");
  EXPECT_EQ(r.options.controller_tls_reload_interval_s, 3u);
  EXPECT_TRUE(parse({"--controller-ca", "ca.pem"}).error.empty());  // server-verified only
}

TEST(ProxyControllerTlsFlags, HalfAConfigurationIsAnError) {
  EXPECT_EQ(parse({"--controller-ca", "ca", "--controller-tls-cert", "c"}).error,
            "--controller-tls-cert and --controller-tls-key go together");
  EXPECT_EQ(parse({"--controller-tls-cert", "c", "--controller-tls-key", "k"}).error,
            "--controller-tls-cert and --controller-server-name need --controller-ca");
  EXPECT_EQ(parse({"--controller-tls-reload-interval", "0"}).error,
            "--controller-tls-reload-interval must be from 1 to 3600 seconds");
  EXPECT_EQ(config::parseProxyFlags({"--config", "t.yaml", "--controller-ca", "ca"}).error,
            "--controller-ca is for --controller");
}

TEST(ControllerServerName, MatchesSanDnsAndIp) {
  using topology::serverNameMatches;
  EXPECT_TRUE(serverNameMatches("ctl.memzone.svc", {"CTL.memzone.svc"}, {}));
  EXPECT_TRUE(serverNameMatches("a.memzone.svc", {"*.memzone.svc"}, {}));
  EXPECT_FALSE(serverNameMatches("a.b.memzone.svc", {"*.memzone.svc"}, {}));
  EXPECT_FALSE(serverNameMatches("memzone.svc", {"*.memzone.svc"}, {}));
  EXPECT_FALSE(serverNameMatches("ctl.memzone.svc.evil", {"ctl.memzone.svc"}, {}));
  EXPECT_TRUE(serverNameMatches("10.0.0.1", {}, {"10.0.0.1"}));
  EXPECT_FALSE(serverNameMatches("10.0.0.2", {"ctl"}, {"10.0.0.1"}));
}

TEST(TlsHandshakeFailures, ClassifiedFromGrpcLogLines) {
  using ops::classifyHandshakeFailure;
  using ops::TlsHandshakeResult;
  EXPECT_EQ(classifyHandshakeFailure("Handshake failed with fatal error SSL_ERROR_SSL: "
                                     "error:0A0000C7:SSL routines::peer did not return a "
                                     "certificate."),
            TlsHandshakeResult::kNoPeerCertificate);
  EXPECT_EQ(classifyHandshakeFailure("Handshake failed with fatal error SSL_ERROR_SSL: "
                                     "error:0A000086:SSL routines::certificate verify failed."),
            TlsHandshakeResult::kUntrustedCertificate);
  EXPECT_EQ(classifyHandshakeFailure("Handshake failed with fatal error SSL_ERROR_SSL: "
                                     "error:0A000418:SSL routines::tlsv1 alert unknown ca."),
            TlsHandshakeResult::kRefusedByPeer);
  EXPECT_EQ(classifyHandshakeFailure("Handshake failed with fatal error SSL_ERROR_SYSCALL"),
            TlsHandshakeResult::kOther);
}

}  // namespace
}  // namespace memzone
