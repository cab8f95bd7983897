//! Table-table joins (Kafka Streams' `KTable#join`, `leftJoin`, `outerJoin`): a table whose
//! value for a key combines two tables built from topics (`AgentSpec::table_of`) under the same
//! key. Both sides are co-partitioned with the agent's source, so an instance holds a key's
//! left value, right value and result; a record of either side updates its table and then the
//! result (`AgentContext::table_join`), in the same commit step.

use serde::{Deserialize, Serialize};

use crate::base::record::Record;

/// Which keys a table-table join holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableJoin {
    /// Keys both sides hold.
    Inner,
    /// Keys the left side holds (`right` may be `None`).
    Left,
    /// Keys either side holds.
    Outer,
}

impl TableJoin {
    /// Parses `inner`, `left` or `outer` (the macro's spelling).
    pub fn parse(kind: &str) -> Option<TableJoin> {
        match kind {
            "inner" => Some(TableJoin::Inner),
            "left" => Some(TableJoin::Left),
            "outer" => Some(TableJoin::Outer),
            _ => None,
        }
    }

    /// Whether a key with these sides belongs in the result (else it is removed, Kafka Streams'
    /// tombstone).
    pub(crate) fn keeps(self, left: bool, right: bool) -> bool {
        match self {
            TableJoin::Inner => left && right,
            TableJoin::Left => left,
            TableJoin::Outer => left || right,
        }
    }
}

/// A key's value in a table-table join: each side's current value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "L: Serialize, R: Serialize",
    deserialize = "L: serde::de::DeserializeOwned, R: serde::de::DeserializeOwned"
))]
pub struct Joined<L, R> {
    /// The left table's value (always there in inner and left joins).
    pub left: Option<L>,
    /// The right table's value (always there in inner joins).
    pub right: Option<R>,
}

impl<L, R> Default for Joined<L, R> {
    fn default() -> Self {
        Joined {
            left: None,
            right: None,
        }
    }
}

impl<L: Record, R: Record> Record for Joined<L, R> {}

/// A declared table-table join (`AgentSpec::table_join`).
#[derive(Debug, Clone)]
pub(crate) struct TableJoinSpec {
    pub(crate) name: String,
    pub(crate) left: String,
    pub(crate) right: String,
    pub(crate) kind: TableJoin,
}

#[cfg(test)]
mod tests {
    use super::TableJoin;

    #[test]
    fn each_kind_keeps_the_keys_kafka_streams_does() {
        let cases = [(true, true), (true, false), (false, true), (false, false)];
        let kept = |kind: TableJoin| cases.map(|(l, r)| kind.keeps(l, r));
        assert_eq!(kept(TableJoin::Inner), [true, false, false, false]);
        assert_eq!(kept(TableJoin::Left), [true, true, false, false]);
        assert_eq!(kept(TableJoin::Outer), [true, true, true, false]);
        assert_eq!(TableJoin::parse("left"), Some(TableJoin::Left));
        assert_eq!(TableJoin::parse("full"), None);
    }
}
