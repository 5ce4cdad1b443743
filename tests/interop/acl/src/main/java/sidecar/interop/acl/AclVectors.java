package sidecar.interop.acl;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SortedMap;
import java.util.TreeMap;

import org.apache.rocketmq.acl.common.AclClientRPCHook;
import org.apache.rocketmq.acl.common.AclUtils;
import org.apache.rocketmq.acl.common.SessionCredentials;
import org.apache.rocketmq.common.MQVersion;
import org.apache.rocketmq.common.MixAll;
import org.apache.rocketmq.remoting.CommandCustomHeader;
import org.apache.rocketmq.remoting.protocol.RemotingCommand;

/**
 * Writes known-answer vectors for RocketMQ ACL signing, computed by Apache's own classes.
 *
 * <p>Every signature in the output comes from {@link AclClientRPCHook#doBeforeRequest} (the hook
 * every official Java client runs before each request) applied to a {@link RemotingCommand}
 * built with Apache's API; the only other signature, {@code signature_without_unique_key}, comes
 * from Apache's {@link AclUtils#combineRequestContent} + {@link AclUtils#calSignature} over the
 * field set a 4.9.x broker verifies (protocol notes 6.2 / 6.4). Nothing here implements HMAC or
 * the field ordering itself.
 *
 * <p>The program compiles unchanged against rocketmq-acl 4.9.8 and rocketmq-client 5.3.3 (same
 * package {@code org.apache.rocketmq.acl.common}); both builds must print identical bytes.
 *
 * <p>Usage: {@code AclVectors OUT.json} (or {@code -} for stdout). Output: a JSON array of cases
 * {@code {name, secret_key, access_key, security_token, code, version, ext_fields_in,
 * body_base64, signature, ext_fields_out}} plus, where relevant, {@code signature_without_unique_key}
 * and {@code ext_json_in}. Object keys inside {@code ext_fields_*} are sorted; strings are written
 * as UTF-8 with control characters escaped as {@code \\uXXXX}.
 */
public final class AclVectors {
    private static final int V4_9_8 = MQVersion.Version.valueOf("V4_9_8").ordinal();
    private static final int V4_9_3 = MQVersion.Version.valueOf("V4_9_3").ordinal();

    private AclVectors() {
    }

    /**
     * A custom header shaped like SendMessageRequestHeaderV2 (one-letter fields, typed values),
     * so the vectors also cover the hook's own header-to-extFields conversion
     * ({@code makeCustomHeaderToNet}: Integer/Long/Boolean become their {@code toString()}).
     * Declared here because the Apache class moved packages between 4.9.x and 5.x.
     */
    public static final class SendV2Header implements CommandCustomHeader {
        public String a; // producerGroup
        public String b; // topic
        public String c; // defaultTopic
        public Integer d; // defaultTopicQueueNums
        public Integer e; // queueId
        public Integer f; // sysFlag
        public Long g; // bornTimestamp
        public Integer h; // flag
        public String i; // properties
        public Integer j; // reconsumeTimes
        public Boolean k; // unitMode
        public Integer l; // maxReconsumeTimes (null: not sent)
        public Boolean m; // batch
        public String n; // brokerName (bname)

        @Override
        public void checkFields() {
        }
    }

    /** One vector: what goes in, and what Apache's hook made of it. */
    private static final class Case {
        final String name;
        final String accessKey;
        final String secretKey;
        final String securityToken;
        RemotingCommand request;
        Map<String, String> extIn;
        String extJsonIn;
        boolean withoutUniqueKey;

        Case(String name, String ak, String sk, String token) {
            this.name = name;
            this.accessKey = ak;
            this.secretKey = sk;
            this.securityToken = token;
        }
    }

    // 0x01 / 0x02 are the property separators of the V2 header field "i" (MessageDecoder.NAME_VALUE_SEPARATOR
    // and PROPERTY_SEPARATOR).
    private static final String NV = "\u0001";
    private static final String PS = "\u0002";

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: AclVectors OUT.json|-");
            System.exit(64);
        }
        List<Case> cases = buildCases();
        StringBuilder out = new StringBuilder();
        out.append("[\n");
        for (int n = 0; n < cases.size(); n++) {
            out.append(render(cases.get(n)));
            out.append(n + 1 < cases.size() ? ",\n" : "\n");
        }
        out.append("]\n");
        byte[] bytes = out.toString().getBytes(StandardCharsets.UTF_8);
        if (args[0].equals("-")) {
            System.out.write(bytes);
            System.out.flush();
        } else {
            Path p = Paths.get(args[0]);
            Files.write(p, bytes);
        }
        System.err.println("AclVectors: " + cases.size() + " cases; AclClientRPCHook from "
                + AclClientRPCHook.class.getProtectionDomain().getCodeSource().getLocation());
    }

    private static List<Case> buildCases() throws Exception {
        List<Case> cases = new ArrayList<>();

        // 1. Name-server request: GET_ROUTEINFO_BY_TOPIC (105). The first vector of the protocol notes.
        Case c = new Case("namesrv_get_route_info", "RocketMQ", "12345678", null);
        c.request = RemotingCommand.createRequestCommand(105, null);
        c.request.setVersion(V4_9_8);
        c.request.addExtField("topic", "TopicTest");
        cases.add(c);

        // 2. SEND_MESSAGE_V2 (310), ASCII: the second vector of the protocol notes (header as extFields).
        c = new Case("send_message_v2_ascii", "RocketMQ", "12345678", null);
        c.request = RemotingCommand.createRequestCommand(310, null);
        c.request.setVersion(V4_9_8);
        String[][] v2 = {{"a", "PG"}, {"b", "TopicTest"}, {"c", "TBW102"}, {"d", "4"}, {"e", "0"}, {"f", "0"},
            {"g", "1700000000000"}, {"h", "0"}, {"i", "UNIQ_KEY" + NV + "ABC" + PS + "WAIT" + NV + "true" + PS},
            {"j", "0"}, {"k", "false"}, {"m", "false"}, {"n", "broker-a"}};
        for (String[] kv : v2) {
            c.request.addExtField(kv[0], kv[1]);
        }
        c.request.setBody("hello".getBytes(StandardCharsets.UTF_8));
        cases.add(c);

        // 3. SEND_MESSAGE_V2 (310) through a typed custom header; properties and body with
        //    Chinese text and an emoji (4-byte UTF-8), separators \u0001 / \u0002.
        c = new Case("send_message_v2_unicode", "sidecarNewAK", "sidecarNewSK-0123456789", null);
        SendV2Header h = new SendV2Header();
        h.a = "生产者组-PG";
        h.b = "TopicUnicode";
        h.c = "TBW102";
        h.d = 4;
        h.e = 2;
        h.f = 0;
        h.g = 1764000000123L;
        h.h = 0;
        h.i = "KEYS" + NV + "订单-42 \uD83D\uDE80" + PS + "TAGS" + NV + "标签A" + PS
            + "UNIQ_KEY" + NV + "7F000001A1B218B4AAC2710C0F6D0000" + PS + "WAIT" + NV + "true" + PS
            + "自定义" + NV + "值 ✓ ünïcödé" + PS;
        h.j = 0;
        h.k = false;
        h.m = false;
        h.n = "new~broker-a";
        c.request = RemotingCommand.createRequestCommand(310, h);
        c.request.setVersion(V4_9_8);
        c.request.setBody("你好，RocketMQ \uD83D\uDE80 — ünïcödé body".getBytes(StandardCharsets.UTF_8));
        cases.add(c);

        // 4. SEND_BATCH_MESSAGE (320): V2 header with m=true and a batch body in the layout of
        //    MessageDecoder.encodeMessages. The body is built here, not by MessageDecoder, because
        //    4.9.8 and 5.3.3 encode batch properties differently (5.3.3 ends them with a trailing
        //    \u0002) and the vectors must be identical for both builds; the body is only input.
        c = new Case("send_batch_message", "sidecarNewAK", "sidecarNewSK-0123456789", null);
        SendV2Header hb = new SendV2Header();
        hb.a = "BatchProducerGroup";
        hb.b = "TopicBatch";
        hb.c = "TBW102";
        hb.d = 4;
        hb.e = 1;
        hb.f = 0;
        hb.g = 1764000000456L;
        hb.h = 0;
        hb.i = "WAIT" + NV + "true" + PS;
        hb.j = 0;
        hb.k = false;
        hb.m = true;
        hb.n = "broker-a";
        List<byte[]> batch = new ArrayList<>();
        for (int n = 0; n < 3; n++) {
            batch.add(encodeBatchEntry(("batch body " + n + " — 批量 \uD83D\uDCE6").getBytes(StandardCharsets.UTF_8),
                "KEYS" + NV + "batch-key-" + n + PS + "WAIT" + NV + "true" + PS + "TAGS" + NV + "tag" + n));
        }
        c.request = RemotingCommand.createRequestCommand(320, hb);
        c.request.setVersion(V4_9_8);
        c.request.setBody(concat(batch));
        cases.add(c);

        // 5. PULL_MESSAGE (11): PullMessageRequestHeader fields as the 4.9.8 client puts them on the wire.
        c = new Case("pull_message", "sidecarOldAK", "sidecarOldSK-abcdefgh", null);
        c.request = RemotingCommand.createRequestCommand(11, null);
        c.request.setVersion(V4_9_8);
        String[][] pull = {{"consumerGroup", "GroupA"}, {"topic", "TopicA"}, {"queueId", "3"},
            {"queueOffset", "1024"}, {"maxMsgNums", "32"}, {"sysFlag", "3"}, {"commitOffset", "1000"},
            {"suspendTimeoutMillis", "15000"}, {"subscription", "*"}, {"subVersion", "1764000000789"},
            {"expressionType", "TAG"}};
        for (String[] kv : pull) {
            c.request.addExtField(kv[0], kv[1]);
        }
        cases.add(c);

        // 6. HEART_BEAT (34): no header fields at all, JSON HeartbeatData body.
        c = new Case("heart_beat", "sidecarNewAK", "sidecarNewSK-0123456789", null);
        c.request = RemotingCommand.createRequestCommand(34, null);
        c.request.setVersion(V4_9_8);
        String heartbeat = "{\"clientID\":\"127.0.0.1@pod-a#1764000000000\",\"consumerDataSet\":[{"
            + "\"consumeFromWhere\":\"CONSUME_FROM_LAST_OFFSET\",\"consumeType\":\"CONSUME_PASSIVELY\","
            + "\"groupName\":\"GroupA\",\"messageModel\":\"CLUSTERING\",\"subscriptionDataSet\":[{"
            + "\"classFilterMode\":false,\"codeSet\":[],\"expressionType\":\"TAG\",\"subString\":\"*\","
            + "\"subVersion\":1764000000789,\"tagsSet\":[],\"topic\":\"TopicA\"},{\"classFilterMode\":false,"
            + "\"codeSet\":[],\"expressionType\":\"TAG\",\"subString\":\"*\",\"subVersion\":1764000000790,"
            + "\"tagsSet\":[],\"topic\":\"%RETRY%GroupA\"}],\"unitMode\":false}],"
            + "\"producerDataSet\":[{\"groupName\":\"CLIENT_INNER_PRODUCER\"}]}";
        c.request.setBody(heartbeat.getBytes(StandardCharsets.UTF_8));
        cases.add(c);

        // 7. QUERY_MESSAGE (12) with _UNIQUE_KEY_QUERY, as MQClientAPIImpl.queryMessage sends it
        //    (the flag is added before the hook runs, so the client signs it).
        cases.add(queryCase("query_message_unique_key", V4_9_8, "true"));
        // 8. The same from a client that reports version V4_9_3 (5.x brokers then also drop the flag).
        cases.add(queryCase("query_message_key_v4_9_3", V4_9_3, "false"));

        // 9. Header from a C++ client: JSON numbers and booleans in extFields. Apache's own decoder
        //    (RemotingCommand.decode, fastjson into HashMap<String,String>) gives the strings the
        //    broker will sign over; those are recorded as ext_fields_in.
        c = new Case("cpp_json_numbers", "sidecarNewAK", "sidecarNewSK-0123456789", null);
        String json = "{\"code\":310,\"language\":\"CPP\",\"version\":399,\"opaque\":7,\"flag\":0,"
            + "\"remark\":\"\",\"extFields\":{\"a\":\"CppProducerGroup\",\"b\":\"TopicCpp\",\"c\":\"TBW102\","
            + "\"d\":4,\"e\":3,\"f\":0,\"g\":1764000000999,\"h\":0,\"i\":\"UNIQ_KEY\\u0001CPP0001\\u0002"
            + "WAIT\\u0001true\\u0002\",\"j\":0,\"k\":false,\"l\":16,\"m\":false,\"OnsChannel\":\"\"}}";
        byte[] body = "body from a C++ client".getBytes(StandardCharsets.UTF_8);
        c.request = decodeFrame(json, body);
        c.extJsonIn = json;
        cases.add(c);

        // 10. With a SecurityToken (STS): the hook puts it into extFields before signing.
        c = new Case("security_token", "sidecarNewAK", "sidecarNewSK-0123456789", "STS.token-0123456789abcdef");
        c.request = RemotingCommand.createRequestCommand(310, null);
        c.request.setVersion(V4_9_8);
        for (String[] kv : v2) {
            c.request.addExtField(kv[0], kv[1]);
        }
        c.request.setBody("hello with token".getBytes(StandardCharsets.UTF_8));
        cases.add(c);

        for (Case k : cases) {
            sign(k);
        }
        return cases;
    }

    private static Case queryCase(String name, int version, String uniqueFlag) {
        Case c = new Case(name, "sidecarOldAK", "sidecarOldSK-abcdefgh", null);
        c.request = RemotingCommand.createRequestCommand(12, null);
        c.request.setVersion(version);
        String[][] q = {{"topic", "TopicQuery"}, {"key", "k-pod-42"}, {"maxNum", "32"},
            {"beginTimestamp", "0"}, {"endTimestamp", "9223372036854775807"}};
        for (String[] kv : q) {
            c.request.addExtField(kv[0], kv[1]);
        }
        c.request.addExtField(MixAll.UNIQUE_MSG_QUERY_FLAG, uniqueFlag);
        c.withoutUniqueKey = true;
        return c;
    }

    /** One message of a batch body: total size, magic 0, body CRC 0, flag 0, body, properties. */
    private static byte[] encodeBatchEntry(byte[] body, String properties) {
        byte[] props = properties.getBytes(StandardCharsets.UTF_8);
        int size = 4 + 4 + 4 + 4 + 4 + body.length + 2 + props.length;
        ByteBuffer b = ByteBuffer.allocate(size);
        b.putInt(size).putInt(0).putInt(0).putInt(0).putInt(body.length).put(body);
        b.putShort((short) props.length).put(props);
        return b.array();
    }

    private static byte[] concat(List<byte[]> parts) {
        int n = 0;
        for (byte[] p : parts) {
            n += p.length;
        }
        ByteBuffer b = ByteBuffer.allocate(n);
        for (byte[] p : parts) {
            b.put(p);
        }
        return b.array();
    }

    /** Frame without the 4-byte total length: header length (JSON type) + header + body. */
    private static RemotingCommand decodeFrame(String headerJson, byte[] body) throws Exception {
        byte[] header = headerJson.getBytes(StandardCharsets.UTF_8);
        ByteBuffer buf = ByteBuffer.allocate(4 + header.length + body.length);
        buf.putInt(header.length); // serialize type JSON = 0 in the high byte
        buf.put(header);
        buf.put(body);
        buf.flip();
        return RemotingCommand.decode(buf);
    }

    private static void sign(Case c) {
        // ext_fields_in: what the app sends before signing (header fields stringified as on the wire).
        RemotingCommand probe = RemotingCommand.createRequestCommand(c.request.getCode(), c.request.readCustomHeader());
        if (c.request.getExtFields() != null) {
            for (Map.Entry<String, String> e : c.request.getExtFields().entrySet()) {
                probe.addExtField(e.getKey(), e.getValue());
            }
        }
        probe.makeCustomHeaderToNet();
        c.extIn = new TreeMap<>(probe.getExtFields() == null ? Map.of() : probe.getExtFields());

        AclClientRPCHook hook = new AclClientRPCHook(c.securityToken == null
            ? new SessionCredentials(c.accessKey, c.secretKey)
            : new SessionCredentials(c.accessKey, c.secretKey, c.securityToken));
        hook.doBeforeRequest("127.0.0.1:10911", c.request);
        c.request.makeCustomHeaderToNet(); // what encode() puts on the wire
    }

    private static String render(Case c) {
        Map<String, Object> o = new LinkedHashMap<>();
        o.put("name", c.name);
        o.put("secret_key", c.secretKey);
        o.put("access_key", c.accessKey);
        o.put("security_token", c.securityToken);
        o.put("code", c.request.getCode());
        o.put("version", c.request.getVersion());
        o.put("ext_fields_in", c.extIn);
        if (c.extJsonIn != null) {
            o.put("ext_json_in", c.extJsonIn);
        }
        byte[] body = c.request.getBody();
        o.put("body_base64", body == null ? null : Base64.getEncoder().encodeToString(body));
        Map<String, String> out = new TreeMap<>(c.request.getExtFields());
        o.put("signature", out.get(SessionCredentials.SIGNATURE));
        if (c.withoutUniqueKey) {
            // What a 4.9.x broker (PlainAccessValidator.parse) and a 5.x broker for versions <= V4_9_3
            // verify: every field except Signature and _UNIQUE_KEY_QUERY, then the body.
            SortedMap<String, String> verified = new TreeMap<>();
            for (Map.Entry<String, String> e : out.entrySet()) {
                if (!e.getKey().equals(SessionCredentials.SIGNATURE) && !e.getKey().equals(MixAll.UNIQUE_MSG_QUERY_FLAG)) {
                    verified.put(e.getKey(), e.getValue());
                }
            }
            o.put("signature_without_unique_key",
                AclUtils.calSignature(AclUtils.combineRequestContent(c.request, verified), c.secretKey));
        }
        o.put("ext_fields_out", out);
        StringBuilder sb = new StringBuilder("  ");
        writeValue(sb, o, 1);
        return sb.toString();
    }

    // ------------------------------------------------------------------ a minimal JSON writer

    private static void indent(StringBuilder sb, int level) {
        for (int n = 0; n < level; n++) {
            sb.append("  ");
        }
    }

    @SuppressWarnings("unchecked")
    private static void writeValue(StringBuilder sb, Object v, int level) {
        if (v == null) {
            sb.append("null");
        } else if (v instanceof String) {
            writeString(sb, (String) v);
        } else if (v instanceof Integer || v instanceof Long) {
            sb.append(v);
        } else if (v instanceof Map) {
            Map<String, Object> m = (Map<String, Object>) v;
            if (m.isEmpty()) {
                sb.append("{}");
                return;
            }
            sb.append("{\n");
            int n = 0;
            for (Map.Entry<String, Object> e : m.entrySet()) {
                indent(sb, level + 1);
                writeString(sb, e.getKey());
                sb.append(": ");
                writeValue(sb, e.getValue(), level + 1);
                sb.append(++n < m.size() ? ",\n" : "\n");
            }
            indent(sb, level);
            sb.append('}');
        } else {
            throw new IllegalArgumentException("cannot write " + v.getClass());
        }
    }

    private static void writeString(StringBuilder sb, String s) {
        sb.append('"');
        for (int n = 0; n < s.length(); n++) {
            char ch = s.charAt(n);
            switch (ch) {
                case '"':
                    sb.append("\\\"");
                    break;
                case '\\':
                    sb.append("\\\\");
                    break;
                case '\n':
                    sb.append("\\n");
                    break;
                case '\r':
                    sb.append("\\r");
                    break;
                case '\t':
                    sb.append("\\t");
                    break;
                default:
                    if (ch < 0x20 || ch == 0x7f || ch == '\u2028' || ch == '\u2029') {
                        sb.append(String.format("\\u%04x", (int) ch));
                    } else {
                        sb.append(ch);
                    }
            }
        }
        sb.append('"');
    }
}
