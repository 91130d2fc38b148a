// memzone-proxy: flags -> bootstrap. Nothing else lives here.
#include <cstdio>
#include <string>
#include <vector>

#include "memzone/ops/log.h"
#include "proxy/bootstrap.h"
#include "proxy/config/proxy_flags.h"

int main(int argc, char** argv) {
  memzone::ops::setLogProgram("memzone-proxy");
  std::vector<std::string> args(argv + 1, argv + argc);
  memzone::config::FlagsResult flags = memzone::config::parseProxyFlags(args);
  if (flags.help) {
    fputs(memzone::config::proxyUsage().c_str(), stdout);
    return 0;
  }
  if (flags.version) {
    printf("memzone-proxy %s\n", MEMZONE_VERSION);
    return 0;
  }
  if (!flags.error.empty()) {
    fprintf(stderr, "memzone-proxy: %s\n", flags.error.c_str());
    return 2;
  }
  return memzone::runProxy(flags.options);
}
