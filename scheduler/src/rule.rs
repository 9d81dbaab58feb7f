//! Which placement rule a fleet runs.

use serde::{Deserialize, Serialize};

/// The placement rule. Every node of a fleet must place by the same one, so a fleet with
/// nodes of an older release places by the rule of the oldest (see `docs/architecture.md`,
/// *Mixed versions*).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Rule {
    /// Zone quotas and stripes: losing a node moves only its slots, wherever the fleet is
    /// large enough for each workload's stripes (this release).
    #[default]
    Striped,
    /// Every slot by the spread scan in slot order, as releases before the stripes placed:
    /// one forced move can move later slots of the same workload.
    SlotOrder,
}
