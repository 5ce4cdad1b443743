//! The credential check: a signed request that the cluster authenticates but that
//! changes nothing (a heartbeat that registers no group), sent to one of the cluster's
//! brokers, and its answer mapped to a clear outcome.

use std::time::Duration;

use bytes::BytesMut;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::signing::{classify_refusal, CheckOutcome, CheckReport};
use super::upstream::read_answer;
use super::Cluster;
use crate::acl::{sign_request, Credentials};
use crate::protocol::code::request;

use crate::protocol::route;
use crate::protocol::{FrameDecoder, Header};

/// Version ordinal the sidecar's own requests carry (V4_9_8).
const OWN_VERSION: i32 = 409;

/// Runs the check for `cluster` (when it has credentials and name servers) and stores
/// the result.
pub async fn run(cluster: &Cluster, timeout: Duration, max_frame: usize) -> Option<CheckReport> {
    if !cluster.signer.is_configured() || cluster.namesrv.addrs().is_empty() {
        return None;
    }
    let report = check(cluster, cluster.check_topic.as_deref(), timeout, max_frame).await;
    match report.outcome {
        CheckOutcome::Ok => {
            tracing::info!(cluster = %cluster.target, detail = %report.detail, "credential check passed")
        }
        CheckOutcome::NotChecked => {
            tracing::info!(cluster = %cluster.target, detail = %report.detail, "credential check not run")
        }
        outcome => {
            tracing::warn!(cluster = %cluster.target, ?outcome, detail = %report.detail, "credential check failed")
        }
    }
    cluster.signer.set_check(report.clone());
    Some(report)
}

async fn check(
    cluster: &Cluster,
    check_topic: Option<&str>,
    timeout: Duration,
    max_frame: usize,
) -> CheckReport {
    let signer = &cluster.signer;
    if !signer.is_configured() {
        return CheckReport::new(
            CheckOutcome::NotChecked,
            "no credentials configured for this cluster",
        );
    }
    let Some(creds) = signer.store().get() else {
        return CheckReport::new(
            CheckOutcome::NotChecked,
            "credentials could not be loaded (see the reload errors)",
        );
    };
    let (broker, broker_name) = match find_broker(cluster, check_topic).await {
        Ok(found) => found,
        Err(report) => return report,
    };
    // A heartbeat that registers no group proves authentication; reading the check
    // topic's max offset also proves the account may use the topic (authorization).
    let mut probes = vec![("a signed heartbeat", heartbeat_probe())];
    if let Some(topic) = check_topic {
        let topic = match &cluster.namespace {
            Some(ns) => ns.wrap(topic).into_owned(),
            None => topic.to_owned(),
        };
        probes.push((
            "a signed GET_MAX_OFFSET on the check topic",
            max_offset_probe(&topic, &broker_name),
        ));
    }
    let mut code = 0;
    let mut remark = String::new();
    for (what, (header, body)) in &probes {
        match exchange(
            &broker,
            header,
            body,
            &creds,
            signer.rule(),
            timeout,
            max_frame,
        )
        .await
        {
            Ok((0, _)) => continue,
            Ok((c, r)) => {
                code = c;
                remark = format!("{what}: {r}");
                break;
            }
            Err(e) => {
                return CheckReport::new(CheckOutcome::Unreachable, format!("broker {broker}: {e}"))
            }
        }
    }
    if code == 0 {
        let what: Vec<&str> = probes.iter().map(|(w, _)| *w).collect();
        return CheckReport::new(
            CheckOutcome::Ok,
            format!("broker {broker} accepted {}", what.join(" and ")),
        );
    }
    let outcome = classify_refusal(code, &remark).unwrap_or(CheckOutcome::Unexpected);
    let mut detail = format!(
        "broker {broker} answered code {code}: {}",
        signer.scrub(&remark)
    );
    if outcome == CheckOutcome::UnknownAccessKey {
        // TDMQ's docs name the two values both ways round: try them swapped, and say so
        // if that works (never sign with them swapped silently).
        let swapped = Credentials {
            access_key: creds.secret_key.expose().to_owned(),
            secret_key: crate::acl::SecretKey::new(creds.access_key.clone()),
            security_token: creds.security_token.clone(),
        };
        let (header, body) = heartbeat_probe();
        let answer = exchange(
            &broker,
            &header,
            &body,
            &swapped,
            signer.rule(),
            timeout,
            max_frame,
        )
        .await;
        if let Ok((0, _)) = answer {
            detail.push_str(
                "; the cluster accepts the two values the other way round: the AccessKey and \
                 SecretKey look swapped, fix the Secret (the sidecar does not swap them itself)",
            );
        }
    }
    CheckReport::new(outcome, detail)
}

/// A broker (address, name) of `cluster`: the master of `check_topic`'s route, else the
/// first master in the cluster info.
async fn find_broker(
    cluster: &Cluster,
    check_topic: Option<&str>,
) -> Result<(String, String), CheckReport> {
    let (code, topic_or_info) = match check_topic {
        Some(topic) => (request::GET_ROUTEINFO_BY_TOPIC, Some(topic)),
        None => (request::GET_BROKER_CLUSTER_INFO, None),
    };
    let mut header = Header::request(code, 0);
    header.version = OWN_VERSION;
    if let Some(topic) = topic_or_info {
        header.set_ext("topic", topic);
    }
    let answer = match cluster.namesrv.call(&header, &[]).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err(CheckReport::new(CheckOutcome::Unexpected, "no answer")),
        Err(e) => return Err(CheckReport::new(CheckOutcome::Unreachable, e.to_string())),
    };
    let reply = Header::decode(answer.frame.serialize_type(), answer.frame.header_bytes())
        .map_err(|e| {
            CheckReport::new(
                CheckOutcome::Unexpected,
                format!("name server sent a bad header: {e}"),
            )
        })?;
    if reply.code != 0 {
        let remark = cluster.signer.scrub(reply.remark.as_deref().unwrap_or(""));
        if let Some(outcome) = classify_refusal(reply.code, &remark) {
            return Err(CheckReport::new(
                outcome,
                format!(
                    "name server {} answered code {}: {remark}",
                    answer.addr, reply.code
                ),
            ));
        }
        let hint = if check_topic.is_none() {
            "; set check_topic to a topic of this cluster"
        } else {
            ""
        };
        return Err(CheckReport::new(
            CheckOutcome::NotChecked,
            format!(
                "name server {} answered code {}: {remark}{hint}",
                answer.addr, reply.code
            ),
        ));
    }
    let value = route::parse_lenient(&answer.frame.body())
        .map_err(|e| CheckReport::new(CheckOutcome::Unexpected, e.to_string()))?;
    first_master(&value).ok_or_else(|| {
        CheckReport::new(
            CheckOutcome::NotChecked,
            "the name server knows no broker to check against",
        )
    })
}

fn first_master(value: &Value) -> Option<(String, String)> {
    let datas: Vec<&Value> = match (value.get("brokerDatas"), value.get("brokerAddrTable")) {
        (Some(Value::Array(list)), _) => list.iter().collect(),
        (_, Some(Value::Object(table))) => table.values().collect(),
        _ => Vec::new(),
    };
    datas.iter().find_map(|bd| {
        let addrs = bd.get("brokerAddrs")?.as_object()?;
        let addr = addrs.get("0").or_else(|| addrs.values().next())?.as_str()?;
        let name = bd
            .get("brokerName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Some((addr.to_owned(), name.to_owned()))
    })
}

/// HEART_BEAT with no producer or consumer group: changes nothing on the broker.
fn heartbeat_probe() -> (Header, Vec<u8>) {
    let body = format!(
        "{{\"clientID\":\"rmq-sidecar-credential-check@{}\",\"consumerDataSet\":[],\"producerDataSet\":[]}}",
        std::process::id()
    );
    (Header::request(request::HEART_BEAT, 1), body.into_bytes())
}

/// GET_MAX_OFFSET on queue 0 of `topic` (with `bname`, which 5.x proxies route by).
fn max_offset_probe(topic: &str, broker_name: &str) -> (Header, Vec<u8>) {
    let mut h = Header::request(request::GET_MAX_OFFSET, 1);
    h.set_ext("topic", topic);
    h.set_ext("queueId", "0");
    if !broker_name.is_empty() {
        h.set_ext("bname", broker_name);
    }
    (h, Vec::new())
}

/// Signs `header` + `body` with `creds`, sends it on a fresh connection and returns the
/// answer's code and remark.
async fn exchange(
    broker: &str,
    header: &Header,
    body: &[u8],
    creds: &Credentials,
    rule: crate::acl::UniqueKeyRule,
    timeout: Duration,
    max_frame: usize,
) -> Result<(i32, String), String> {
    let mut header = header.clone();
    header.version = OWN_VERSION;
    sign_request(&mut header, body, creds, rule);
    let exchange = async {
        let mut stream = TcpStream::connect(broker)
            .await
            .map_err(|e| format!("connect failed: {e}"))?;
        stream
            .write_all(&header.encode_frame(body))
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut decoder = FrameDecoder::new(max_frame);
        let frame = read_answer(&mut stream, &mut buf, &mut decoder, header.opaque).await?;
        let h = Header::decode(frame.serialize_type(), frame.header_bytes())
            .map_err(|e| e.to_string())?;
        Ok((h.code, h.remark.unwrap_or_default()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}
