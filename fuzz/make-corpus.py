#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/ (checked in).

Every seed is built here by hand from the protocol notes (shared/docs/rocketmq-protocol.md
§1.1 frame layout and worked example, §1.2 header fields, §3.4 TopicRouteData) and from
this repository's tests/fixtures/. Run it again after changing it; it replaces the seeds
it owns and leaves nothing else behind. Standard library only.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
FIXTURES = REPO / "tests" / "fixtures"
CORPUS = FUZZ / "corpus"

# §1.1 worked example: a Java 5.3.3 GET_ROUTEINFO_BY_TOPIC request (131 bytes).
JAVA_ROUTE_REQUEST = (b'{"code":105,"extFields":{"topic":"TopicTest"},"flag":0,"language":"JAVA",'
                      b'"opaque":3,"serializeTypeCurrentRPC":"JSON","version":479}')
# Its answer, header as a Java name server writes it (fastjson: sorted keys, nulls skipped).
JAVA_ROUTE_RESPONSE = (b'{"code":0,"flag":1,"language":"JAVA","opaque":3,'
                       b'"serializeTypeCurrentRPC":"JSON","version":479}')
# Go's field order, no serializeTypeCurrentRPC, a remark on an error answer.
GO_ERROR_RESPONSE = (b'{"code":17,"language":"GO","version":317,"opaque":7,"flag":1,'
                     b'"remark":"No topic route info in name server for the topic: T"}')
# C++ writes numbers and empty ACL fields into extFields (§1.2).
CPP_SEND = (b'{"code":310,"language":"CPP","version":333,"opaque":1,"flag":0,"extFields":'
            b'{"a":"PG","b":"T","e":3,"f":0,"k":false,"g":1700000000000,"AccessKey":"",'
            b'"Signature":"","OnsChannel":""}}')
# Oneway, a POP code above 32767 (JSON only), a language given as a number.
ONEWAY_POP = b'{"code":200050,"flag":2,"language":9,"opaque":-5,"version":"479","remark":null}'


def binary_header(code: int, language: int, version: int, opaque: int, flag: int,
                  remark: bytes | None, ext: list[tuple[bytes, bytes]]) -> bytes:
    """The ROCKETMQ binary header (§1.2): fixed 21 bytes, remark, ext entries."""
    out = struct.pack(">hbhii", code, language, version, opaque, flag)
    remark = remark or b""
    out += struct.pack(">i", len(remark)) + remark
    entries = b"".join(struct.pack(">h", len(k)) + k + struct.pack(">i", len(v)) + v
                       for k, v in ext)
    return out + struct.pack(">i", len(entries)) + entries


def frame(header: bytes, body: bytes = b"", binary: bool = False) -> bytes:
    """`[total length][serialize type | header length][header][body]` (§1.1)."""
    kind = 1 if binary else 0
    return struct.pack(">iI", 4 + len(header) + len(body), (kind << 24) | len(header)) + header + body


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes().strip()


def stored_record(magic: int, topic: bytes, props: bytes, payload: bytes, sys_flag: int = 0) -> bytes:
    """A stored message record as brokers send them in pull answers (protocol::messages)."""
    v6b, v6s = sys_flag & 0x10, sys_flag & 0x20
    host = lambda v6: (b"\xfd" * 16 if v6 else b"\x0a\x00\x00\x01") + b"\x00\x00\x30\x39"
    r = struct.pack(">iIiiiqqiq", 0, magic, 0x12345678, 3, 0, 7, 4096, sys_flag, 1700000000000)
    r += host(v6b) + struct.pack(">q", 1700000000001) + host(v6s) + struct.pack(">iq", 0, 0)
    r += struct.pack(">i", len(payload)) + payload
    r += (struct.pack(">H", len(topic)) if magic == 0xDAA320AB else bytes([len(topic)])) + topic
    r += struct.pack(">H", len(props)) + props
    return struct.pack(">i", len(r)) + r[4:]


def main() -> None:
    route_fastjson = fixture("route_fastjson_master_slave.json")
    route_standard = route_fastjson.replace(b"{0:", b'{"0":').replace(b",1:", b',"1":')
    assert route_standard != route_fastjson
    cluster_info = fixture("cluster_info_fastjson.json")
    topic_list = b'{"topicList":["RMQ_SYS_TRACE_TOPIC"],"brokerAddr":"10.0.0.21:10911"}'
    # §3.4 optional fields: orderTopicConf, filter servers, a 5.x static topic mapping.
    route_static = (b'{"brokerDatas":[{"brokerAddrs":{0:"10.0.0.11:10911"},"brokerName":"broker-a",'
                    b'"cluster":"C","zoneName":"z1"}],"filterServerTable":{"10.0.0.11:10911":'
                    b'["10.0.0.99:1"]},"orderTopicConf":"broker-a:4;broker-b:8","queueDatas":'
                    b'[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSynFlag":0,'
                    b'"writeQueueNums":4}],"topicQueueMappingByBroker":{"broker-a":{"bname":'
                    b'"broker-a","currIdMap":{0:0,1:1},"dirty":false,"epoch":1,"scope":"C",'
                    b'"topic":"T","totalQueues":2}}}')

    binary_route_request = binary_header(105, 0, 479, 3, 0, None, [(b"topic", b"TopicTest")])
    assert len(binary_route_request) == 41  # §1.1: "the same header in ROCKETMQ form is 41 bytes"
    binary_send = binary_header(310, 0, 479, 1, 0, None,
                                [(b"a", b"PG"), (b"b", b"TopicTest"), (b"n", b"broker-a"),
                                 (b"b", b"dup-last-wins")])
    binary_error = binary_header(1, 9, 317, 8, 1, "réponse".encode(), [])
    binary_empty_value = binary_header(34, 7, -1, 0, 3, None, [(b"k", b""), (b"", b"v")])

    lock_body = (b'{"clientId":"10.0.0.5@1","consumerGroup":"G","mqSet":[{"brokerName":"broker-a",'
                 b'"queueId":0,"topic":"T"},{"brokerName":"new~broker-b","queueId":1,"topic":"T"}],'
                 b'"onlyThisBroker":false}')
    reset_body = (b'{"offsetTable":{{"brokerName":"broker-a","queueId":0,"topic":"T"}:12,'
                  b'{"brokerName" : "broker-b","queueId":1,"topic":"brokerName"}:7}}')
    odd_names = (b'{"brokerName":"a\\"b","x":{"brokerName":"\xc3\xa9t\xc3\xa9"},"brokerName":5,'
                 b'"brokerName":"unterminated')

    # Java route request: the response with the fastjson body, then a second request.
    conversation = (frame(JAVA_ROUTE_REQUEST) + frame(JAVA_ROUTE_RESPONSE, route_fastjson)
                    + frame(binary_route_request, binary=True))

    seeds: dict[str, dict[str, bytes]] = {
        # [limit (0 = 16 MiB, else n*8)][chunking (0 = whole, else chunks of 1..n)][stream]
        "frame_decoder": {
            "java-route-request": b"\x00\x00" + frame(JAVA_ROUTE_REQUEST),
            "java-route-request-bytewise": b"\x00\x01" + frame(JAVA_ROUTE_REQUEST),
            "binary-route-request": b"\x00\x07" + frame(binary_route_request, binary=True),
            "conversation-chunked": b"\xc8\x1d" + conversation,
            "route-response-over-small-limit": b"\x20\x05" + frame(JAVA_ROUTE_RESPONSE, route_fastjson),
            "declared-16mib": b"\x00\x03" + struct.pack(">iI", 16 * 1024 * 1024, 10) + b'{"code":1}',
            "truncated-frame": b"\x00\x02" + frame(GO_ERROR_RESPONSE)[:-9],
            "header-overflow": b"\x00\x00" + bytes([0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 0]),
            "unknown-serialize-type": b"\x00\x00" + bytes([0, 0, 0, 4, 2, 0, 0, 0]),
            "lock-request-then-garbage": b"\x00\x0b" + frame(CPP_SEND, lock_body) + b"\xff\xff\xff\xff",
        },
        "header_json": {
            "java-route-request": JAVA_ROUTE_REQUEST,
            "java-route-response": JAVA_ROUTE_RESPONSE,
            "go-error-response": GO_ERROR_RESPONSE,
            "cpp-send-numbers": CPP_SEND,
            "oneway-pop-numeric-language": ONEWAY_POP,
            "duplicate-keys-and-extras": (b'{"code":34,"opaque":1,"extFields":{"x":"1","x":"2",'
                                          b'"n":null,"o":{"p":[1,2.5]}},"zone":{"a":1e-7}}'),
        },
        "header_binary": {
            "route-request-41-bytes": binary_route_request,
            "send-v2-duplicate-key": binary_send,
            "go-error-utf8-remark": binary_error,
            "empty-value-and-key": binary_empty_value,
            "truncated-ext": binary_send[:-3],
        },
        "route_rewrite": {
            "route-fastjson": route_fastjson,
            "route-standard": route_standard,
            "route-static-topic": route_static,
            "cluster-info-fastjson": cluster_info,
            "topic-list": topic_list,
            "fastjson-escapes": b'{0:"a:{1:b}",12:{"k\\"q":[1,{3:true}]},"brokerAddr":"x:1"}',
        },
        "names_rewrite": {
            "lock-batch-mq": lock_body,
            "reset-offset-object-keys": reset_body,
            "query-assignment": (b'{"messageQueueAssignments":[{"messageQueue":{"brokerName":'
                                 b'"broker-a","queueId":3,"topic":"T"},"mode":"PULL"}]}'),
            "odd-values": odd_names,
        },
        "signing": {},
        "messages": {
            "pull-two-records": stored_record(0xDAA320A7, b"fuzz|ns%T", b"KEYS\x01k\x02", b"one")
            + stored_record(0xDAA320A7, b"%RETRY%fuzz|ns%G", b"RETRY_TOPIC\x01fuzz|ns%T\x02PGROUP\x01fuzz|ns%P\x02", b"two"),
            "v2-ipv6-compressed": stored_record(0xDAA320AB, b"Plain", b"PGROUP\x01P\x02", b"\x78\x9c\x01", 0x31),
            "system-topic": stored_record(0xDAA320A7, b"TBW102", b"", b""),
        },
    }

    # Signing: [flags][header length u16][header][body]; headers from the ACL vectors.
    for i, v in enumerate(json.loads((FIXTURES / "acl_vectors.json").read_text())):
        ext = v.get("ext_json_in") or v["ext_fields_in"]
        header = {"code": v["code"], "extFields": ext, "flag": 0, "language": "JAVA",
                  "opaque": i, "version": v["version"]}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        body = base64.b64decode(v["body_base64"]) if v["body_base64"] else b""
        flags = (4 if v["security_token"] else 0) | (2 if "v4_9_3" in v["name"] else 0)
        seeds["signing"][f"json-{v['name']}"] = bytes([flags]) + struct.pack(">H", len(text)) + text + body
    bin_signed = binary_header(310, 0, 409, 9, 0, None,
                               [(b"a", b"PG"), (b"AccessKey", b"old"), (b"Signature", b"stale")])
    seeds["signing"]["binary-send-with-stale-signature"] = (b"\x05" + struct.pack(">H", len(bin_signed))
                                                            + bin_signed + b"hello")

    for target, files in seeds.items():
        out = CORPUS / target
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for name, data in files.items():
            (out / name).write_bytes(data)
        size = sum(len(d) for d in files.values())
        print(f"{target}: {len(files)} seeds, {size} bytes")


if __name__ == "__main__":
    main()
