//! The id of a cluster. Every module that names a cluster imports it from here, so that
//! naming one does not pull in the configuration.

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
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
