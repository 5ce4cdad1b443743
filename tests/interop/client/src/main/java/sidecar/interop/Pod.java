package sidecar.interop;

import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.PrintStream;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.text.SimpleDateFormat;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Date;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.rocketmq.acl.common.AclClientRPCHook;
import org.apache.rocketmq.acl.common.SessionCredentials;
import org.apache.rocketmq.client.ClientConfig;
import org.apache.rocketmq.client.QueryResult;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.rebalance.AllocateMessageQueueAveragely;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyContext;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.ConsumeOrderlyContext;
import org.apache.rocketmq.client.consumer.listener.ConsumeOrderlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.consumer.listener.MessageListenerOrderly;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.remoting.RPCHook;

/**
 * A simulated application pod for the rocketmq-sidecar interop tests.
 *
 * <p>It uses only the public API of the official Apache RocketMQ Java client and is compiled
 * separately against each client version under test (4.9.8 and 5.3.3), so the source must stay
 * source-compatible with both (e.g. never name {@code MessageModel}, whose package moved in 5.x).
 *
 * <p>Modes (all take {@code --namesrv ADDR}, which is handed to {@code setNamesrvAddr}):
 * <ul>
 *   <li>{@code producer --topic T --group G --out FILE [--rate N] [--count N|--forever]
 *       [--send-timeout-ms MS]}: SYNC sends with unique keys {@code k-<pod>-<seq>} (key = message
 *       key = body). One line per SEND_OK:
 *       {@code key TAB brokerName TAB msgId TAB offsetMsgId TAB epochMillis}. A failed send is
 *       retried with the same key until it succeeds or the pod is stopped.</li>
 *   <li>{@code consumer --topic T --group G --out FILE [--consume-from last|first] [--orderly]}: push
 *       consumer ({@code --orderly}: a {@code MessageListenerOrderly}, which locks its queues with
 *       LOCK_BATCH_MQ);
 *       (CLUSTERING); one line per received message:
 *       {@code key TAB brokerName TAB queueId TAB queueOffset TAB epochMillis TAB topic TAB
 *       reconsumeTimes}; {@code --fail-every N} fails the first delivery of every Nth key (it
 *       returns through the retry topic).</li>
 *   <li>{@code smoke --topic T --group G --count N [--timeout-s S] [--out FILE]}: produce N keys and
 *       consume them back with a push consumer in the same JVM; exit 0 only if all arrived.</li>
 *   <li>{@code query-keys --topic T --keys k1,k2 | --keys-file F}: ask the brokers (QUERY_MESSAGE via
 *       the key index) whether each key is stored; prints {@code FOUND/MISSING} lines.</li>
 *   <li>{@code latency --topic T --group G --direct-namesrv A --sidecar-namesrv B [--rounds R]
 *       [--per-round N] [--warmup W]}: 1 KiB sync sends straight to the cluster and through a
 *       sidecar in alternating rounds; prints {@code LATENCY {json}} (used by
 *       {@code benches/interop_latency.py}).</li>
 * </ul>
 *
 * <p>Common options: {@code --pod NAME} (also the client instanceName), {@code --poll-ns-ms},
 * {@code --heartbeat-ms}, {@code --persist-offset-ms}, {@code --rebalance-ms} (system property
 * {@code rocketmq.client.rebalance.waitInterval}, set before any client class loads),
 * {@code --stop-file FILE} (default {@code <out>.stop}), {@code --ak AK --sk SK [--token T]} (the app
 * signs every request itself with the official {@code AclClientRPCHook}; without them it sends no
 * credentials), {@code --namespace NS} ({@code setNamespace}: the client wraps every topic and
 * group itself, as TDMQ 4.x samples do). Unset timers keep the RocketMQ defaults.
 * The pod stops cleanly (calling {@code shutdown()}) on SIGTERM or when the stop file appears.
 */
public final class Pod {
    private static final PrintStream ERR = System.err;
    private static final PrintStream OUT = System.out;

    private final Map<String, String> opts;
    private final String mode;
    private final String pod;
    private final Path stopFile;
    private volatile boolean stopRequested;
    private final CountDownLatch finished = new CountDownLatch(1);

    private Pod(String mode, Map<String, String> opts) {
        this.mode = mode;
        this.opts = opts;
        this.pod = opts.getOrDefault("pod", "pod" + ProcessHandle.current().pid());
        String stop = opts.get("stop-file");
        if (stop == null && opts.containsKey("out")) {
            stop = opts.get("out") + ".stop";
        }
        this.stopFile = stop == null ? null : Paths.get(stop);
    }

    public static void main(String[] args) {
        if (args.length < 1) {
            usage("missing mode");
        }
        Map<String, String> opts = parseOpts(args);
        // Must happen before RebalanceService is loaded: it reads the property in a static initialiser.
        if (opts.containsKey("rebalance-ms")) {
            System.setProperty("rocketmq.client.rebalance.waitInterval", opts.get("rebalance-ms"));
        }
        Pod p = new Pod(args[0], opts);
        int rc;
        try {
            rc = p.run();
        } catch (Throwable t) {
            log("FATAL %s", t);
            t.printStackTrace(ERR);
            rc = 2;
        } finally {
            p.finished.countDown();
        }
        OUT.flush();
        ERR.flush();
        // Client libraries leave non-daemon threads behind in some versions; exit explicitly.
        System.exit(rc);
    }

    private int run() throws Exception {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            if (finished.getCount() == 0) {
                return;
            }
            log("SIGTERM/shutdown: stopping %s", pod);
            stopRequested = true;
            try {
                finished.await(30, TimeUnit.SECONDS);
            } catch (InterruptedException ignored) {
                Thread.currentThread().interrupt();
            }
        }, "pod-shutdown"));
        switch (mode) {
            case "producer":
                return runProducer();
            case "consumer":
                return runConsumer();
            case "smoke":
                return runSmoke();
            case "query-keys":
                return runQueryKeys();
            case "latency":
                return runLatency();
            default:
                usage("unknown mode " + mode);
                return 2;
        }
    }

    // ------------------------------------------------------------------ latency

    /**
     * Synchronous send latency, direct vs through a sidecar, in one JVM: two producers (one per
     * name server: {@code --direct-namesrv}, {@code --sidecar-namesrv}) send 1 KiB messages in
     * alternating rounds so both paths see the same JVM and machine state. Prints one line
     * {@code LATENCY {json}} with median and p99 per path, in microseconds.
     */
    private int runLatency() throws Exception {
        String topic = need("topic");
        String group = need("group");
        int rounds = Integer.parseInt(opts.getOrDefault("rounds", "10"));
        int perRound = Integer.parseInt(opts.getOrDefault("per-round", "200"));
        int warmup = Integer.parseInt(opts.getOrDefault("warmup", "300"));
        RPCHook hook = aclHook();
        DefaultMQProducer direct = hook == null ? new DefaultMQProducer(group + "_direct")
                : new DefaultMQProducer(group + "_direct", hook);
        direct.setNamesrvAddr(need("direct-namesrv"));
        direct.setInstanceName(pod + "-direct");
        DefaultMQProducer relayed = hook == null ? new DefaultMQProducer(group + "_sidecar")
                : new DefaultMQProducer(group + "_sidecar", hook);
        relayed.setNamesrvAddr(need("sidecar-namesrv"));
        relayed.setInstanceName(pod + "-sidecar");
        direct.start();
        relayed.start();
        byte[] body = new byte[1024];
        try {
            for (int i = 0; i < warmup; i++) {
                sendTimed(direct, topic, body);
                sendTimed(relayed, topic, body);
            }
            long[] d = new long[rounds * perRound];
            long[] r = new long[rounds * perRound];
            int n = 0;
            for (int round = 0; round < rounds; round++) {
                for (int i = 0; i < perRound; i++) {
                    d[n + i] = sendTimed(direct, topic, body);
                }
                for (int i = 0; i < perRound; i++) {
                    r[n + i] = sendTimed(relayed, topic, body);
                }
                n += perRound;
            }
            Arrays.sort(d);
            Arrays.sort(r);
            OUT.printf("LATENCY {\"samples\":%d,\"direct_median_us\":%.1f,\"direct_p99_us\":%.1f,"
                    + "\"sidecar_median_us\":%.1f,\"sidecar_p99_us\":%.1f}%n",
                    n, pct(d, 0.5), pct(d, 0.99), pct(r, 0.5), pct(r, 0.99));
        } finally {
            direct.shutdown();
            relayed.shutdown();
        }
        return 0;
    }

    private static long sendTimed(DefaultMQProducer p, String topic, byte[] body) throws Exception {
        long t = System.nanoTime();
        SendResult res = p.send(new Message(topic, body), 3000);
        long dt = System.nanoTime() - t;
        if (res.getSendStatus() != SendStatus.SEND_OK) {
            throw new IllegalStateException("send status " + res.getSendStatus());
        }
        return dt;
    }

    private static double pct(long[] sorted, double q) {
        return sorted[(int) Math.round((sorted.length - 1) * q)] / 1000.0;
    }

    // ------------------------------------------------------------------ producer

    private int runProducer() throws Exception {
        String topic = need("topic");
        DefaultMQProducer producer = newProducer(need("group"));
        long count = opts.containsKey("count") && !opts.containsKey("forever")
                ? Long.parseLong(opts.get("count")) : Long.MAX_VALUE;
        double rate = Double.parseDouble(opts.getOrDefault("rate", "50"));
        long sendTimeout = Long.parseLong(opts.getOrDefault("send-timeout-ms", "3000"));
        long intervalNanos = rate > 0 ? (long) (1e9 / rate) : 0L;
        producer.start();
        log("producer %s started: namesrv=%s topic=%s group=%s rate=%s/s count=%s", pod,
                producer.getNamesrvAddr(), topic, producer.getProducerGroup(), rate,
                count == Long.MAX_VALUE ? "forever" : count);
        long seq = 0;
        long failures = 0;
        long nextDue = System.nanoTime();
        long lastStatus = System.currentTimeMillis();
        try (LineSink sink = new LineSink(need("out"))) {
            while (seq < count && !shouldStop()) {
                String key = "k-" + pod + "-" + seq;
                try {
                    SendResult r = sendOne(producer, topic, key, sendTimeout);
                    if (r.getSendStatus() == SendStatus.SEND_OK) {
                        sink.line(key, r.getMessageQueue().getBrokerName(), r.getMsgId(),
                                r.getOffsetMsgId(), Long.toString(System.currentTimeMillis()));
                        seq++;
                    } else {
                        failures++;
                        log("send %s returned %s (will retry the same key)", key, r.getSendStatus());
                        pause(200);
                    }
                } catch (Exception e) {
                    failures++;
                    log("send %s failed: %s (will retry the same key)", key, oneLine(e));
                    pause(200);
                }
                long now = System.currentTimeMillis();
                if (now - lastStatus >= 5000) {
                    OUT.printf("[%s] %s acked=%d failures=%d%n", ts(), pod, seq, failures);
                    OUT.flush();
                    lastStatus = now;
                }
                if (intervalNanos > 0) {
                    nextDue += intervalNanos;
                    long wait = nextDue - System.nanoTime();
                    if (wait > 0) {
                        pauseNanos(wait);
                    } else if (wait < -1_000_000_000L) {
                        nextDue = System.nanoTime(); // fell behind (failures): do not burst
                    }
                }
            }
        } finally {
            producer.shutdown();
        }
        OUT.printf("[%s] %s producer stopped acked=%d failures=%d%n", ts(), pod, seq, failures);
        return 0;
    }

    private static SendResult sendOne(DefaultMQProducer producer, String topic, String key, long timeout)
            throws Exception {
        Message msg = new Message(topic, "interop", key, key.getBytes(StandardCharsets.UTF_8));
        return producer.send(msg, timeout);
    }

    // ------------------------------------------------------------------ consumer

    private int runConsumer() throws Exception {
        String topic = need("topic");
        AtomicLong received = new AtomicLong();
        try (LineSink sink = new LineSink(need("out"))) {
            DefaultMQPushConsumer consumer = newConsumer(need("group"), topic, (key, brokerName, ext) -> {
                sink.line(key, brokerName, Integer.toString(ext.getQueueId()),
                        Long.toString(ext.getQueueOffset()), Long.toString(System.currentTimeMillis()),
                        ext.getTopic(), Integer.toString(ext.getReconsumeTimes()));
                received.incrementAndGet();
            });
            consumer.start();
            log("consumer %s started: namesrv=%s topic=%s group=%s model=%s from=%s", pod,
                    consumer.getNamesrvAddr(), topic, consumer.getConsumerGroup(),
                    String.valueOf(consumer.getMessageModel()), consumer.getConsumeFromWhere());
            long lastStatus = System.currentTimeMillis();
            try {
                while (!shouldStop()) {
                    pause(200);
                    long now = System.currentTimeMillis();
                    if (now - lastStatus >= 5000) {
                        OUT.printf("[%s] %s received=%d%n", ts(), pod, received.get());
                        OUT.flush();
                        lastStatus = now;
                    }
                }
            } finally {
                consumer.shutdown();
            }
        }
        OUT.printf("[%s] %s consumer stopped received=%d%n", ts(), pod, received.get());
        return 0;
    }

    /** Receives one message; implementations must be thread-safe. */
    private interface Receiver {
        void accept(String key, String brokerName, MessageExt ext) throws IOException;
    }

    private DefaultMQPushConsumer newConsumer(String group, String topic, Receiver receiver) throws Exception {
        RPCHook hook = aclHook();
        DefaultMQPushConsumer consumer = hook == null ? new DefaultMQPushConsumer(group)
                : new DefaultMQPushConsumer(group, hook, new AllocateMessageQueueAveragely());
        applyClientConfig(consumer);
        String from = opts.getOrDefault("consume-from", "last");
        if (from.equals("first")) {
            consumer.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        } else if (!from.equals("last")) {
            usage("--consume-from must be first or last");
        }
        consumer.subscribe(topic, "*");
        if (opts.containsKey("orderly")) {
            consumer.registerMessageListener((MessageListenerOrderly) (msgs, context) -> {
                String brokerName = context.getMessageQueue().getBrokerName();
                try {
                    for (MessageExt m : msgs) {
                        String key = m.getKeys();
                        if (key == null || key.isEmpty()) {
                            key = new String(m.getBody(), StandardCharsets.UTF_8);
                        }
                        receiver.accept(key, brokerName, m);
                    }
                } catch (IOException e) {
                    log("cannot record message: %s", e);
                    return ConsumeOrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT;
                }
                return ConsumeOrderlyStatus.SUCCESS;
            });
            return consumer;
        }
        int failEvery = Integer.parseInt(opts.getOrDefault("fail-every", "0"));
        consumer.registerMessageListener((MessageListenerConcurrently) (msgs, context) -> {
            String brokerName = context.getMessageQueue().getBrokerName();
            try {
                for (MessageExt m : msgs) {
                    String key = m.getKeys();
                    if (key == null || key.isEmpty()) {
                        key = new String(m.getBody(), StandardCharsets.UTF_8);
                    }
                    // --fail-every N: the first delivery of every Nth key fails, so it comes back
                    // through the group's retry topic (one message per batch: the default).
                    if (failEvery > 0 && m.getReconsumeTimes() == 0 && Math.floorMod(key.hashCode(), failEvery) == 0) {
                        return ConsumeConcurrentlyStatus.RECONSUME_LATER;
                    }
                    receiver.accept(key, brokerName, m);
                }
            } catch (IOException e) {
                log("cannot record message: %s", e);
                return ConsumeConcurrentlyStatus.RECONSUME_LATER;
            }
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        return consumer;
    }

    // ------------------------------------------------------------------ smoke

    private int runSmoke() throws Exception {
        String topic = need("topic");
        String group = need("group");
        int count = Integer.parseInt(opts.getOrDefault("count", "20"));
        long timeoutMs = Long.parseLong(opts.getOrDefault("timeout-s", "60")) * 1000L;
        long deadline = System.currentTimeMillis() + timeoutMs;
        long t0 = System.currentTimeMillis();

        Set<String> got = ConcurrentHashMap.newKeySet();
        AtomicLong deliveries = new AtomicLong();
        DefaultMQPushConsumer consumer = newConsumer(group, topic, (key, brokerName, ext) -> {
            deliveries.incrementAndGet();
            got.add(key);
        });
        DefaultMQProducer producer = newProducer(opts.getOrDefault("producer-group", group + "-producer"));
        LineSink sink = opts.containsKey("out") ? new LineSink(opts.get("out")) : null;
        List<String> sent = new ArrayList<>();
        int failures = 0;
        try {
            consumer.start();
            // CONSUME_FROM_LAST_OFFSET on a fresh group may start at the queue end (see the protocol
            // notes, section 8): only produce once the consumer owns every queue of the topic.
            boolean assigned = false;
            while (System.currentTimeMillis() < deadline && !shouldStop()) {
                var rebalance = consumer.getDefaultMQPushConsumerImpl().getRebalanceImpl();
                var all = rebalance.getTopicSubscribeInfoTable().get(topic);
                int owned = 0;
                for (var mq : rebalance.getProcessQueueTable().keySet()) {
                    if (mq.getTopic().equals(topic)) {
                        owned++;
                    }
                }
                if (all != null && !all.isEmpty() && owned >= all.size()) {
                    assigned = true;
                    log("smoke %s: consumer owns %d/%d queues after %d ms", pod, owned, all.size(),
                            System.currentTimeMillis() - t0);
                    break;
                }
                pause(100);
            }
            if (!assigned) {
                OUT.printf("SMOKE FAIL pod=%s reason=consumer-not-assigned elapsed_ms=%d%n", pod,
                        System.currentTimeMillis() - t0);
                return 1;
            }
            producer.start();
            String runId = Long.toString(System.currentTimeMillis(), 36);
            for (int i = 0; i < count && System.currentTimeMillis() < deadline && !shouldStop(); ) {
                String key = "k-" + pod + "-" + runId + "-" + i;
                try {
                    SendResult r = sendOne(producer, topic, key,
                            Long.parseLong(opts.getOrDefault("send-timeout-ms", "3000")));
                    if (r.getSendStatus() == SendStatus.SEND_OK) {
                        sent.add(key);
                        if (sink != null) {
                            sink.line(key, r.getMessageQueue().getBrokerName(), r.getMsgId(),
                                    r.getOffsetMsgId(), Long.toString(System.currentTimeMillis()));
                        }
                        i++;
                        continue;
                    }
                    log("smoke send %s returned %s", key, r.getSendStatus());
                } catch (Exception e) {
                    log("smoke send %s failed: %s", key, oneLine(e));
                }
                failures++;
                pause(200);
            }
            while (System.currentTimeMillis() < deadline && !shouldStop() && !got.containsAll(sent)) {
                pause(100);
            }
        } finally {
            producer.shutdown();
            consumer.shutdown();
            if (sink != null) {
                sink.close();
            }
        }
        Set<String> missing = new LinkedHashSet<>(sent);
        missing.removeAll(got);
        boolean ok = sent.size() == count && missing.isEmpty();
        OUT.printf("SMOKE %s pod=%s topic=%s group=%s count=%d sent=%d received=%d missing=%d "
                        + "deliveries=%d send_failures=%d elapsed_ms=%d%n",
                ok ? "OK" : "FAIL", pod, topic, group, count, sent.size(), sent.size() - missing.size(),
                missing.size(), deliveries.get(), failures, System.currentTimeMillis() - t0);
        if (!missing.isEmpty()) {
            OUT.printf("SMOKE missing keys (first 20): %s%n", new ArrayList<>(missing).subList(0,
                    Math.min(20, missing.size())));
        }
        return ok ? 0 : 1;
    }

    // ------------------------------------------------------------------ query-keys

    private int runQueryKeys() throws Exception {
        String topic = need("topic");
        List<String> keys = new ArrayList<>();
        if (opts.containsKey("keys")) {
            for (String k : opts.get("keys").split(",")) {
                if (!k.isBlank()) {
                    keys.add(k.trim());
                }
            }
        }
        if (opts.containsKey("keys-file")) {
            for (String k : Files.readAllLines(Paths.get(opts.get("keys-file")), StandardCharsets.UTF_8)) {
                if (!k.isBlank()) {
                    keys.add(k.trim());
                }
            }
        }
        // The producer is only a handle to the admin API (QUERY_MESSAGE); it never sends.
        DefaultMQProducer admin = newProducer(opts.getOrDefault("group", "interop-query-" + pod));
        admin.start();
        int missing = 0;
        try {
            for (String key : keys) {
                MessageExt hit = null;
                for (int attempt = 0; attempt < 3 && hit == null; attempt++) {
                    try {
                        QueryResult qr = admin.queryMessage(topic, key, 32, 0L, Long.MAX_VALUE);
                        for (MessageExt m : qr.getMessageList()) {
                            if (key.equals(m.getKeys())) {
                                hit = m;
                                break;
                            }
                        }
                    } catch (Exception e) {
                        log("query %s attempt %d: %s", key, attempt, oneLine(e));
                    }
                    if (hit == null) {
                        pause(500);
                    }
                }
                if (hit != null) {
                    OUT.printf("FOUND\t%s\t%s\t%d\t%d\t%s%n", key, hit.getMsgId(), hit.getQueueId(),
                            hit.getQueueOffset(), hostPort(hit));
                } else {
                    missing++;
                    OUT.printf("MISSING\t%s%n", key);
                }
            }
        } finally {
            admin.shutdown();
        }
        OUT.printf("QUERY total=%d found=%d missing=%d%n", keys.size(), keys.size() - missing, missing);
        return 0;
    }

    private static String hostPort(MessageExt m) {
        java.net.SocketAddress a = m.getStoreHost();
        if (a instanceof java.net.InetSocketAddress) {
            java.net.InetSocketAddress i = (java.net.InetSocketAddress) a;
            return i.getAddress().getHostAddress() + ":" + i.getPort();
        }
        return String.valueOf(a);
    }

    // ------------------------------------------------------------------ helpers

    private DefaultMQProducer newProducer(String group) {
        RPCHook hook = aclHook();
        DefaultMQProducer producer = hook == null ? new DefaultMQProducer(group) : new DefaultMQProducer(group, hook);
        applyClientConfig(producer);
        return producer;
    }

    /** The official ACL signing hook when {@code --ak/--sk} are given (the app signs itself), else null. */
    private RPCHook aclHook() {
        String ak = opts.get("ak");
        String sk = opts.get("sk");
        if (ak == null && sk == null) {
            return null;
        }
        if (ak == null || sk == null) {
            usage("--ak and --sk go together");
        }
        String token = opts.get("token");
        return new AclClientRPCHook(token == null ? new SessionCredentials(ak, sk) : new SessionCredentials(ak, sk, token));
    }

    /** Name server from --namesrv, instanceName = pod name, optional shortened timers. */
    private void applyClientConfig(ClientConfig c) {
        c.setNamesrvAddr(need("namesrv"));
        c.setInstanceName(pod);
        if (opts.containsKey("poll-ns-ms")) {
            c.setPollNameServerInterval(Integer.parseInt(opts.get("poll-ns-ms")));
        }
        if (opts.containsKey("heartbeat-ms")) {
            c.setHeartbeatBrokerInterval(Integer.parseInt(opts.get("heartbeat-ms")));
        }
        if (opts.containsKey("persist-offset-ms")) {
            c.setPersistConsumerOffsetInterval(Integer.parseInt(opts.get("persist-offset-ms")));
        }
        if (opts.containsKey("namespace")) {
            c.setNamespace(opts.get("namespace"));
        }
    }

    private boolean shouldStop() {
        if (stopRequested) {
            return true;
        }
        if (stopFile != null && Files.exists(stopFile)) {
            log("stop file %s found", stopFile);
            stopRequested = true;
        }
        return stopRequested;
    }

    private String need(String key) {
        String v = opts.get(key);
        if (v == null || v.isEmpty()) {
            usage("--" + key + " is required for mode " + mode);
        }
        return v;
    }

    private static Map<String, String> parseOpts(String[] args) {
        Map<String, String> m = new HashMap<>();
        for (int i = 1; i < args.length; i++) {
            String a = args[i];
            if (!a.startsWith("--")) {
                usage("unexpected argument " + a);
            }
            String k = a.substring(2);
            if (k.equals("forever") || k.equals("orderly")) {
                m.put(k, "true");
            } else if (i + 1 < args.length) {
                m.put(k, args[++i]);
            } else {
                usage("missing value for " + a);
            }
        }
        return m;
    }

    private static void usage(String why) {
        ERR.println("error: " + why);
        ERR.println("usage: Pod producer|consumer|smoke|query-keys|latency --namesrv ADDR --topic T [--group G]"
                + " [--out FILE] [--pod NAME] [--rate N] [--count N|--forever] [--send-timeout-ms MS]"
                + " [--poll-ns-ms MS] [--heartbeat-ms MS] [--persist-offset-ms MS] [--rebalance-ms MS]"
                + " [--consume-from last|first] [--timeout-s S] [--keys k1,k2|--keys-file F]"
                + " [--ak AK --sk SK [--token T]]");
        System.exit(64);
    }

    private static void pause(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static void pauseNanos(long nanos) {
        pause(Math.max(1L, nanos / 1_000_000L));
    }

    /** First line of {@code t}, plus the first line of its root cause (e.g. the broker's code and remark). */
    private static String oneLine(Throwable t) {
        String s = firstLine(t);
        Throwable root = t;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        return root == t ? s : s + " | cause: " + firstLine(root);
    }

    private static String firstLine(Throwable t) {
        String s = String.valueOf(t);
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    private static String ts() {
        return new SimpleDateFormat("HH:mm:ss.SSS").format(new Date());
    }

    private static void log(String fmt, Object... args) {
        ERR.printf("[%s] %s%n", ts(), String.format(fmt, args));
        ERR.flush();
    }

    /** Append-only, thread-safe TSV file; every line is flushed so the harness can tail it live. */
    private static final class LineSink implements AutoCloseable {
        private final Writer w;

        LineSink(String path) throws IOException {
            this.w = new OutputStreamWriter(new FileOutputStream(path, true), StandardCharsets.UTF_8);
        }

        synchronized void line(String... cols) throws IOException {
            w.write(String.join("\t", cols));
            w.write('\n');
            w.flush();
        }

        @Override
        public synchronized void close() throws IOException {
            w.close();
        }
    }
}
