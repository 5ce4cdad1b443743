// kube-apiserver for tests/deploy/test_apiserver.py: the real API server (admission chain,
// validation, RBAC, TokenRequest) that the injector is tested against.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
