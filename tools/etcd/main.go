// Command etcd runs the etcd server for the test cluster; it is etcd's own entry point, built from
// the pinned module so the test machine needs no prebuilt binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
