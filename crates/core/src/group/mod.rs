//! Consumer groups: membership ([`coordinator`]) and committed offsets
//! ([`offsets`]). The broker ties them to topics (validation, lag).

pub mod coordinator;
pub mod offsets;

pub use coordinator::{
    GroupCoordinator, GroupDescription, GroupSettings, GroupState, JoinRequest, Joined,
    JoinedMember, MemberDescription, OffsetExpiry, Synced,
};
pub use offsets::{
    CommittedOffset, OffsetStore, StoredGroup, StoredMember, TopicPartition, OFFSETS_TOPIC,
};
