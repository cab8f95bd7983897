use std::collections::BTreeSet;

use rill::prelude::*;

#[record]
struct View {
    user: String,
    url: String,
}

/// A count plus the distinct users: the example of a custom window state.
#[window_state]
#[derive(Default, Clone, Debug)]
pub struct Visits {
    views: u64,
    users: BTreeSet<String>,
}

impl WindowState<View> for Visits {
    fn add(&mut self, view: &View) {
        self.views += 1;
        self.users.insert(view.user.clone());
    }
}

impl MergeState for Visits {
    fn merge(&mut self, other: Self) {
        self.views += other.views;
        self.users.extend(other.users);
    }
}

/// Enums work too (a small state machine per window).
#[window_state]
#[derive(Default, Clone)]
enum Phase {
    #[default]
    Quiet,
    Busy(u32),
}

impl WindowState<View> for Phase {
    fn add(&mut self, view: &View) {
        let _ = &view.url;
        *self = match self {
            Phase::Quiet => Phase::Busy(1),
            Phase::Busy(n) => Phase::Busy(*n + 1),
        };
    }
}

fn main() {
    let mut v = Visits::default();
    v.add(&View { user: "u".into(), url: "/".into() });
    v.merge(Visits::default());
    assert_eq!(v.views, 1);
    let mut p = Phase::Quiet;
    p.add(&View { user: "u".into(), url: "/".into() });
    assert!(matches!(p, Phase::Busy(1)));
}
