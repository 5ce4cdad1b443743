// k8s-node for tests/node: the kubelet, the controller manager and the scheduler of the same
// Kubernetes release as kube-apiserver, linked into one binary (as hyperkube once was) so the
// three share one link step and one file. The first argument names the component:
//
//	k8s-node kubelet --config ...
//	k8s-node kube-controller-manager --kubeconfig ...
//	k8s-node kube-scheduler --kubeconfig ...
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k8s-node kubelet|kube-controller-manager|kube-scheduler [flags]")
		os.Exit(2)
	}
	var command *cobra.Command
	switch os.Args[1] {
	case "kubelet":
		command = kubelet.NewKubeletCommand(context.Background())
	case "kube-controller-manager":
		command = controllermanager.NewControllerManagerCommand()
	case "kube-scheduler":
		command = scheduler.NewSchedulerCommand()
	default:
		fmt.Fprintf(os.Stderr, "k8s-node: unknown component %q\n", os.Args[1])
		os.Exit(2)
	}
	command.SetArgs(os.Args[2:])
	os.Exit(cli.Run(command))
}
