//! The id of a cluster, the two roles a pod's clients play, and where each role goes.
//! Every module that names a cluster imports it from here, so that naming one does not pull
//! in the configuration; the injector writes the same values the sidecar reads.

use std::fmt;

/// Which cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The self-built Apache RocketMQ cluster being left.
    Old,
    /// The TDMQ cluster being moved to.
    New,
}

// === impl Target ===

impl Target {
    /// Both clusters, old first.
    pub const ALL: [Target; 2] = [Target::Old, Target::New];

    /// "old" or "new".
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Old => "old",
            Target::New => "new",
        }
    }

    /// Parses "old" or "new" (case-insensitive, surrounding blanks ignored).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "old" => Some(Target::Old),
            "new" => Some(Target::New),
            _ => None,
        }
    }

    /// 0 for old, 1 for new: the index of per-cluster arrays.
    pub fn index(self) -> usize {
        match self {
            Target::Old => 0,
            Target::New => 1,
        }
    }

    /// The other cluster.
    pub fn other(self) -> Self {
        match self {
            Target::Old => Target::New,
            Target::New => Target::Old,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a pod's clients do with a cluster: send (producers) or receive (consumers). A pod
/// that does both moves each role on its own, consumers first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Producers: sends, transactions, request-reply.
    Producer,
    /// Consumers: pulls, offsets, rebalancing, locks.
    Consumer,
}

// === impl Role ===

impl Role {
    /// Both roles, producer first.
    pub const ALL: [Role; 2] = [Role::Producer, Role::Consumer];

    /// "producer" or "consumer".
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }

    /// Parses "producer" or "consumer" (case-insensitive, surrounding blanks ignored).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "producer" => Some(Role::Producer),
            "consumer" => Some(Role::Consumer),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where each role of a pod goes. Written as `new` (both roles) or
/// `producer=new,consumer=old` in annotations, stage values and `--route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RoleTargets {
    /// Where the pod's producers send.
    pub producer: Target,
    /// Where the pod's consumers receive from.
    pub consumer: Target,
}

// === impl RoleTargets ===

impl RoleTargets {
    /// Both roles on `target`.
    pub fn both(target: Target) -> Self {
        Self {
            producer: target,
            consumer: target,
        }
    }

    /// The target of `role`.
    pub fn get(&self, role: Role) -> Target {
        match role {
            Role::Producer => self.producer,
            Role::Consumer => self.consumer,
        }
    }

    /// The same with `role` on `target`.
    pub fn with(mut self, role: Role, target: Target) -> Self {
        match role {
            Role::Producer => self.producer = target,
            Role::Consumer => self.consumer = target,
        }
        self
    }

    /// `Some(target)` when both roles are on one cluster.
    pub fn whole(&self) -> Option<Target> {
        (self.producer == self.consumer).then_some(self.producer)
    }

    /// The roles the pod plays on `cluster`.
    pub fn roles_on(&self, cluster: Target) -> Vec<Role> {
        Role::ALL
            .into_iter()
            .filter(|r| self.get(*r) == cluster)
            .collect()
    }

    /// Parses `old`, `new`, or `producer=<target>,consumer=<target>` (both roles, either
    /// order, blanks ignored). The error says what to write.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if let Some(t) = Target::parse(value) {
            return Ok(Self::both(t));
        }
        let usage = "use \"old\", \"new\" or \"producer=new,consumer=old\" (both roles)";
        if !value.contains('=') {
            return Err(format!("'{value}' is not a route; {usage}"));
        }
        let (mut producer, mut consumer) = (None, None);
        for part in value.split(',') {
            let Some((role, target)) = part.split_once('=') else {
                return Err(format!("'{part}' in '{value}' is not role=target; {usage}"));
            };
            let role = Role::parse(role)
                .ok_or_else(|| format!("'{}' in '{value}' is not a role; {usage}", role.trim()))?;
            let target = Target::parse(target).ok_or_else(|| {
                format!("'{}' in '{value}' is not a cluster; {usage}", target.trim())
            })?;
            let slot = match role {
                Role::Producer => &mut producer,
                Role::Consumer => &mut consumer,
            };
            if slot.replace(target).is_some() {
                return Err(format!("'{value}' names the {role} role twice; {usage}"));
            }
        }
        match (producer, consumer) {
            (Some(producer), Some(consumer)) => Ok(Self { producer, consumer }),
            _ => Err(format!("'{value}' does not name both roles; {usage}")),
        }
    }
}

impl fmt::Display for RoleTargets {
    /// `new` when both roles agree, else `producer=new,consumer=old`: what [`Self::parse`]
    /// reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.whole() {
            Some(t) => f.write_str(t.as_str()),
            None => write!(f, "producer={},consumer={}", self.producer, self.consumer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_targets_read_both_forms_and_write_what_they_read() {
        let split = RoleTargets {
            producer: Target::New,
            consumer: Target::Old,
        };
        assert_eq!(
            RoleTargets::parse(" new "),
            Ok(RoleTargets::both(Target::New))
        );
        assert_eq!(RoleTargets::parse("producer=new,consumer=old"), Ok(split));
        assert_eq!(
            RoleTargets::parse(" Consumer = OLD , producer=new "),
            Ok(split)
        );
        assert_eq!(split.to_string(), "producer=new,consumer=old");
        assert_eq!(RoleTargets::both(Target::Old).to_string(), "old");
        assert_eq!(RoleTargets::parse(&split.to_string()), Ok(split));
        assert_eq!(split.whole(), None);
        assert_eq!(split.roles_on(Target::New), vec![Role::Producer]);
        assert_eq!(
            RoleTargets::both(Target::New).roles_on(Target::New),
            vec![Role::Producer, Role::Consumer]
        );
        for (bad, says) in [
            ("sideways", "is not a route"),
            ("consumer=new", "does not name both roles"),
            ("producer=new,producer=old", "names the producer role twice"),
            ("producer=new,consumer=mars", "'mars' in"),
            ("broker=new,consumer=old", "'broker' in"),
            ("producer:new", "is not a route"),
            ("producer=new;consumer=old", "is not a cluster"),
        ] {
            let e = RoleTargets::parse(bad).unwrap_err();
            assert!(
                e.contains(says) && e.contains("producer=new,consumer=old"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn parses_both_names_and_nothing_else() {
        assert_eq!(Target::parse(" NEW "), Some(Target::New));
        assert_eq!(Target::parse("old"), Some(Target::Old));
        assert_eq!(Target::parse("both"), None);
        assert_eq!(Target::ALL.map(Target::index), [0, 1]);
        assert_eq!(
            serde_json::to_string(&Target::New).unwrap(),
            "\"new\"",
            "state files and admin output spell clusters in lower case"
        );
    }
}
