// The pod sandbox ("pause") image of the node test, built here because this machine reaches no
// container registry: it holds the pod's namespaces, reaps nothing (each pod has its own PID
// namespace unless shared) and exits on SIGTERM or SIGINT, like the upstream pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
