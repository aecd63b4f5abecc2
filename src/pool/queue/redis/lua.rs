//! The queue's Lua scripts (`../scripts/`), each with the common part in front,
//! compiled into the library and sent by their hash (EVALSHA).

use ::redis::Script;
use std::sync::LazyLock;

pub(super) struct Scripts {
    pub(super) push: Script,
    pub(super) take: Script,
    pub(super) renew: Script,
    pub(super) started: Script,
    pub(super) finish: Script,
    pub(super) release: Script,
    pub(super) requeue_expired: Script,
    pub(super) cancel: Script,
    pub(super) snapshot: Script,
    pub(super) lookup: Script,
    pub(super) announce: Script,
    pub(super) leave: Script,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let with_common = |body: &str| Script::new(&format!("{}\n{body}", include_str!("../scripts/common.lua")));
    Scripts {
        push: with_common(include_str!("../scripts/push.lua")),
        take: with_common(include_str!("../scripts/take.lua")),
        renew: with_common(include_str!("../scripts/renew.lua")),
        started: with_common(include_str!("../scripts/started.lua")),
        finish: with_common(include_str!("../scripts/finish.lua")),
        release: with_common(include_str!("../scripts/release.lua")),
        requeue_expired: with_common(include_str!("../scripts/requeue_expired.lua")),
        cancel: with_common(include_str!("../scripts/cancel.lua")),
        snapshot: with_common(include_str!("../scripts/snapshot.lua")),
        lookup: with_common(include_str!("../scripts/lookup.lua")),
        announce: with_common(include_str!("../scripts/announce.lua")),
        leave: with_common(include_str!("../scripts/leave.lua")),
    }
});

/// The keys every script gets, in the order `scripts/common.lua` lists.
pub(super) const KEY_NAMES: [&str; 16] = [
    "queue", "leases", "holder", "payload", "place", "attempt", "enqueued", "cancel", "counters", "durations", "events",
    "notes", "hosts", "capacity", "results", "ended",
];
