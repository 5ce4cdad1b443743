// The application of the node test (tests/interop/test_node.py): an unmodified RocketMQ app built
// with the official Go client, no sidecar awareness. It reads NAMESRV_ADDR (set by the injector),
// ROCKETMQ_TOPIC and ROCKETMQ_PRODUCER_GROUP (from the example Deployment), consumes the topic with
// ROCKETMQ_CONSUMER_GROUP when set, and, when ROCKETMQ_PRODUCER_GROUP is set, sends one message
// every RATE_MS milliseconds with a unique key (pod name, process id, sequence number).
// Every acknowledged send prints "SENT <key> <broker>", every delivery "RECV <key>", so the test
// does message accounting from the container's log. A single send is retried by the client only.
//
// With ONE_SHOT=N it sends N messages, waits until it received them all (or 60 s), and exits 0
// only if every key came back: the Job of the node test.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func main() {
	rlog.SetLogLevel("error")
	namesrv := env("NAMESRV_ADDR", "127.0.0.1:9876")
	topic := env("ROCKETMQ_TOPIC", "orders")
	pgroup := os.Getenv("ROCKETMQ_PRODUCER_GROUP")
	cgroup := os.Getenv("ROCKETMQ_CONSUMER_GROUP")
	rate, _ := strconv.Atoi(env("RATE_MS", "100"))
	oneShot, _ := strconv.Atoi(os.Getenv("ONE_SHOT"))
	host, _ := os.Hostname()
	pod := env("POD_NAME", host)
	fmt.Printf("START namesrv=%s topic=%s producer=%s consumer=%s\n", namesrv, topic, pgroup, cgroup)

	var mu sync.Mutex
	received := map[string]bool{}
	if cgroup != "" {
		c, err := rocketmq.NewPushConsumer(
			consumer.WithNameServer([]string{namesrv}),
			consumer.WithGroupName(cgroup),
			consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
		)
		if err != nil {
			fmt.Println("FATAL consumer:", err)
			os.Exit(1)
		}
		err = c.Subscribe(topic, consumer.MessageSelector{}, func(_ context.Context,
			msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range msgs {
				received[m.GetKeys()] = true
				fmt.Printf("RECV %s\n", m.GetKeys())
			}
			return consumer.ConsumeSuccess, nil
		})
		if err == nil {
			err = c.Start()
		}
		if err != nil {
			fmt.Println("FATAL consumer start:", err)
			os.Exit(1)
		}
		defer func() { _ = c.Shutdown() }()
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if pgroup == "" {
		<-stop
		fmt.Println("STOP")
		return
	}
	p, err := rocketmq.NewProducer(
		producer.WithNameServer([]string{namesrv}),
		producer.WithGroupName(pgroup),
		producer.WithRetry(2),
		producer.WithSendMsgTimeout(3*time.Second),
	)
	if err == nil {
		err = p.Start()
	}
	if err != nil {
		fmt.Println("FATAL producer:", err)
		os.Exit(1)
	}
	defer func() { _ = p.Shutdown() }()

	sent := []string{}
	tick := time.NewTicker(time.Duration(rate) * time.Millisecond)
	defer tick.Stop()
	for seq := 0; oneShot == 0 || seq < oneShot; seq++ {
		select {
		case <-stop:
			fmt.Println("STOP")
			return
		case <-tick.C:
		}
		key := fmt.Sprintf("%s-%d-%d", pod, os.Getpid(), seq)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := p.SendSync(ctx, primitive.NewMessage(topic, []byte(key)).WithKeys([]string{key}))
		cancel()
		if err != nil {
			fmt.Printf("FAIL %s %v\n", key, err)
			continue
		}
		sent = append(sent, key)
		fmt.Printf("SENT %s %s\n", key, res.MessageQueue.BrokerName)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		missing := 0
		for _, k := range sent {
			if !received[k] {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			fmt.Printf("DONE sent=%d\n", len(sent))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	fmt.Println("MISSING after 60 s")
	os.Exit(1)
}
