// Known answers of Apache RocketMQ's own NamespaceUtil, for the sidecar's namespace rules
// (src/protocol/namespace.rs). Compiled and run by tests/interop/test_namespace_vectors.py
// against the official 5.3.3 client jars; prints one TSV line per case:
// namespace, input, wrapNamespace(namespace, input), withoutNamespace(input, namespace).
import java.lang.reflect.Method;

public class NamespaceVectors {
    public static void main(String[] args) throws Exception {
        Class<?> util = Class.forName("org.apache.rocketmq.remoting.protocol.NamespaceUtil");
        Method wrap = util.getMethod("wrapNamespace", String.class, String.class);
        Method without = util.getMethod("withoutNamespace", String.class, String.class);
        String[] namespaces = {"MQ_INST_xx", "rocketmq-abc|ns1", "ns"};
        String[] names = {
            "Topic", "GID_orders", "%RETRY%GID_orders", "%DLQ%GID_orders",
            "TBW102", "SCHEDULE_TOPIC_XXXX", "RMQ_SYS_TRANS_HALF_TOPIC", "RMQ_SYS_TRACE_TOPIC",
            "OFFSET_MOVED_EVENT", "rmq_sys_wheel_timer", "CID_RMQ_SYS_TRANS", "BenchmarkTest",
            "other%Topic", "%RETRY%other%G", "%RETRY%", "%DLQ%", "%Topic", "a%b%c", "Topic%",
        };
        StringBuilder out = new StringBuilder();
        out.append("# namespace\tinput\twrapNamespace\twithoutNamespace(input, namespace)\n");
        for (String ns : namespaces) {
            String[] own = {ns + "%Topic", "%RETRY%" + ns + "%G", "%DLQ%" + ns + "%G", ns + "%", ns + "%a%b", ns + "x%Topic"};
            for (String[] set : new String[][] {names, own}) {
                for (String name : set) {
                    String w = (String) wrap.invoke(null, ns, name);
                    String u = (String) without.invoke(null, name, ns);
                    out.append(ns).append('\t').append(name).append('\t').append(w).append('\t').append(u).append('\n');
                }
            }
        }
        System.out.print(out);
    }
}
