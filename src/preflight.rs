//! `GET /preflight?to=new`: what the pod uses (the topics it sends to, its consumer groups
//! and their subscriptions, as [`crate::proxy::usage`] recorded them from the traffic), and
//! whether the cluster `to` has each of them, before the pod is switched there: every
//! topic's route (retry topics included) is asked of that cluster's name servers, and the
//! credential check of that cluster is shown. A topic that is missing there is named, to be
//! created first (TDMQ does not create topics on first use).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rmq_common::Target;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::protocol::code::{request, response};
use crate::protocol::Header;
use crate::proxy::RelayContext;

/// Most route queries in flight at once.
const CONCURRENCY: usize = 16;
/// Longest the whole check may take; topics not asked by then are reported `unknown`.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Whether a topic is on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// Its route answered with queues.
    Present,
    /// TOPIC_NOT_EXIST: create it there first.
    Missing,
    /// No answer (name servers unreachable, or past the deadline): not known.
    Unknown,
}

/// One topic the pod uses.
#[derive(Debug, Clone, Serialize)]
pub struct TopicCheck {
    /// The topic.
    pub topic: String,
    /// Producer groups of the pod that sent to it.
    pub produced_by: BTreeSet<String>,
    /// Consumer groups of the pod that subscribe to it.
    pub consumed_by: BTreeSet<String>,
    /// Whether the cluster has it.
    pub on_target: Presence,
    /// What the cluster answered.
    pub detail: String,
}

/// The preflight of a switch to one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    /// The cluster checked.
    pub to: Target,
    /// Every topic is present there and the credential check (when it has credentials)
    /// passed.
    pub ready: bool,
    /// Topics to create there first.
    pub missing: Vec<String>,
    /// Each topic the pod uses.
    pub topics: Vec<TopicCheck>,
    /// The pod's consumer groups and what they subscribe to.
    pub groups: std::collections::BTreeMap<String, BTreeSet<String>>,
    /// The cluster's credential check: whether the sidecar signs for it, and the outcome.
    pub credentials: serde_json::Value,
    /// Topics or groups not recorded (the recording is bounded).
    pub unrecorded: u64,
}

/// Checks everything the pod uses against `to`.
pub async fn run(ctx: Arc<RelayContext>, to: Target) -> Preflight {
    let usage = ctx.usage.snapshot();
    let mut topics: std::collections::BTreeMap<String, TopicCheck> = Default::default();
    fn entry<'a>(
        topics: &'a mut std::collections::BTreeMap<String, TopicCheck>,
        topic: &str,
    ) -> &'a mut TopicCheck {
        topics
            .entry(topic.to_owned())
            .or_insert_with(|| TopicCheck {
                topic: topic.to_owned(),
                produced_by: BTreeSet::new(),
                consumed_by: BTreeSet::new(),
                on_target: Presence::Unknown,
                detail: "not asked (the check ran out of time)".to_owned(),
            })
    }
    for (topic, groups) in &usage.produced {
        entry(&mut topics, topic)
            .produced_by
            .extend(groups.iter().cloned());
    }
    for (group, subscribed) in &usage.consumed {
        for topic in subscribed {
            entry(&mut topics, topic).consumed_by.insert(group.clone());
        }
    }
    let names: Vec<String> = topics.keys().cloned().collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut pending = names.into_iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < CONCURRENCY {
            let Some(topic) = pending.next() else { break };
            let ctx = ctx.clone();
            running.spawn(async move {
                let answer = ask(&ctx, to, &topic).await;
                (topic, answer)
            });
        }
        match tokio::time::timeout_at(deadline, running.join_next()).await {
            Ok(Some(Ok((topic, (presence, detail))))) => {
                if let Some(t) = topics.get_mut(&topic) {
                    t.on_target = presence;
                    t.detail = detail;
                }
            }
            Ok(Some(Err(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    running.abort_all();
    let signer = &ctx.cluster(to).signer;
    let check = signer.last_check();
    let credentials_ok = !signer.is_configured()
        || check
            .as_ref()
            .is_some_and(|c| c.outcome == crate::proxy::signing::CheckOutcome::Ok);
    let credentials = serde_json::json!({
        "configured": signer.is_configured(),
        "check": check.map(|c| serde_json::to_value(c).unwrap_or_default()),
    });
    let topics: Vec<TopicCheck> = topics.into_values().collect();
    let missing: Vec<String> = topics
        .iter()
        .filter(|t| t.on_target == Presence::Missing)
        .map(|t| t.topic.clone())
        .collect();
    let ready = credentials_ok && topics.iter().all(|t| t.on_target == Presence::Present);
    Preflight {
        to,
        ready,
        missing,
        topics,
        groups: usage.consumed,
        credentials,
        unrecorded: usage.overflow,
    }
}

/// Asks `to`'s name servers for `topic`'s route.
async fn ask(ctx: &RelayContext, to: Target, topic: &str) -> (Presence, String) {
    let mut header = Header::request(request::GET_ROUTEINFO_BY_TOPIC, 0);
    header.set_ext("topic", topic);
    match ctx.cluster(to).namesrv.call(&header, &[]).await {
        Ok(Some(answer)) => match answer.frame.code() {
            response::SUCCESS => (Presence::Present, format!("route from {}", answer.addr)),
            response::TOPIC_NOT_EXIST => (
                Presence::Missing,
                format!(
                    "{} answered TOPIC_NOT_EXIST: create it on {to}",
                    answer.addr
                ),
            ),
            code => (
                Presence::Unknown,
                format!("{} answered code {code}", answer.addr),
            ),
        },
        Ok(None) => (Presence::Unknown, "no answer".to_owned()),
        Err(e) => (Presence::Unknown, e.to_string()),
    }
}
