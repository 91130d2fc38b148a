// The etcd server binary: go.etcd.io/etcd/server/v3 ships the server as the etcdmain package,
// and the etcd repository's own main package lives in a module that does not pin the server.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
