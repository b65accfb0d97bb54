//! Worker-availability subscriptions: who is told when a command's ready
//! set goes from empty to non-empty, and the rule that picks, among the
//! subscriptions of a command, the ones a notification goes to.
//!
//! - `fanout`: every subscription.
//! - `group`: one per `groupId`, round-robin over the group's
//!   subscriptions (sorted by id), each command in its own turn.
//! - `hash`: one subscription, chosen by `floor(unix_seconds / 60) mod n`
//!   over the `hash` subscriptions sorted by id: stable within a minute.
//!
//! A subscription still inside its `minIntervalSeconds` since its last
//! notification is skipped; for `group`, the rotation passes to the next
//! member instead. The choice says when the first one skipped may be told
//! (`held_until`): the notifier looks at the queue again then, and tells
//! it if work is still ready, so that a throttled notification is late,
//! not lost.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Command, Timestamp};

/// How the notifications of one command are spread over subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// Every subscription.
    Fanout,
    /// One subscription per group, in turn.
    Group,
    /// One subscription per minute.
    Hash,
}

impl DeliveryMode {
    /// Parses `fanout`, `group` or `hash`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "fanout" => Some(Self::Fanout),
            "group" => Some(Self::Group),
            "hash" => Some(Self::Hash),
            _ => None,
        }
    }
}

/// A worker's subscription to "work is ready" notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Its id.
    pub id: Uuid,
    /// The worker (`sub`) that created it: the only one that may renew or
    /// delete it.
    pub owner: String,
    /// Where notifications go.
    pub callback_url: String,
    /// The commands it listens to; `None` for every command.
    pub commands: Option<Vec<Command>>,
    /// How notifications are spread.
    pub mode: DeliveryMode,
    /// Its group (`group` mode).
    pub group_id: Option<String>,
    /// Least time between two notifications to it.
    pub min_interval_seconds: u64,
    /// When it lapses unless renewed.
    pub expires_at: Timestamp,
}

impl Subscription {
    /// True when it listens to `command` and has not lapsed at `now`.
    pub fn wants(&self, command: &Command, now: Timestamp) -> bool {
        self.expires_at > now && self.commands.as_ref().is_none_or(|only| only.contains(command))
    }
}

/// What the chooser remembers between notifications: each group's turn
/// for each command and each subscription's last notification.
#[derive(Debug, Default)]
pub struct Rotation {
    turns: HashMap<(Command, String), usize>,
    last_sent: HashMap<Uuid, Timestamp>,
}

impl Rotation {
    /// Forgets subscriptions not in `live` (removed or lapsed).
    pub fn retain(&mut self, live: impl Fn(&Uuid) -> bool) {
        self.last_sent.retain(|id, _| live(id));
    }

    /// When `subscription` may next be told.
    fn free_at(&self, subscription: &Subscription) -> Timestamp {
        let interval = i64::try_from(subscription.min_interval_seconds.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        self.last_sent
            .get(&subscription.id)
            .map_or(Timestamp(i64::MIN), |last| last.plus_millis(interval))
    }

    /// The subscriptions among `wanting` (those that want `command`) a
    /// notification of `command` at `now` goes to, noted as sent.
    pub fn choose<'a>(
        &mut self,
        command: &Command,
        wanting: &[&'a Subscription],
        now: Timestamp,
    ) -> Choice<'a> {
        let mut sorted = wanting.to_vec();
        sorted.sort_by_key(|subscription| subscription.id);
        let mut chosen: Vec<&Subscription> = Vec::new();
        let mut held_until: Option<Timestamp> = None;
        let mut hold =
            |at: Timestamp| held_until = Some(held_until.map_or(at, |held| held.min(at)));
        let mut groups: BTreeMap<&str, Vec<&Subscription>> = BTreeMap::new();
        let mut hashed = Vec::new();
        for subscription in sorted {
            match subscription.mode {
                DeliveryMode::Fanout => {
                    let free_at = self.free_at(subscription);
                    if free_at <= now {
                        chosen.push(subscription);
                    } else {
                        hold(free_at);
                    }
                }
                DeliveryMode::Group => groups
                    .entry(subscription.group_id.as_deref().unwrap_or_default())
                    .or_default()
                    .push(subscription),
                DeliveryMode::Hash => hashed.push(subscription),
            }
        }
        for (group, members) in groups {
            let key = (command.clone(), group.to_string());
            let turn = self.turns.get(&key).copied().unwrap_or(0);
            let next = (0..members.len())
                .map(|step| (turn + step) % members.len())
                .find(|index| self.free_at(members[*index]) <= now);
            match next {
                Some(index) => {
                    chosen.push(members[index]);
                    self.turns.insert(key, index + 1);
                }
                None => {
                    members.iter().map(|member| self.free_at(member)).min().map(&mut hold);
                }
            }
        }
        if !hashed.is_empty() {
            let minute = now.unix_seconds().div_euclid(60);
            let index = usize::try_from(minute.rem_euclid(hashed.len() as i64)).unwrap_or(0);
            let free_at = self.free_at(hashed[index]);
            if free_at <= now {
                chosen.push(hashed[index]);
            } else {
                hold(free_at);
            }
        }
        for subscription in &chosen {
            self.last_sent.insert(subscription.id, now);
        }
        Choice { chosen, held_until }
    }
}

/// Whom a notification goes to, and when one held back may be told.
#[derive(Debug)]
pub struct Choice<'a> {
    /// The subscriptions told now.
    pub chosen: Vec<&'a Subscription>,
    /// When the first subscription held back by its `minIntervalSeconds`
    /// may be told (none held back: `None`).
    pub held_until: Option<Timestamp>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn subscription(n: u128, mode: DeliveryMode, group: Option<&str>) -> Subscription {
        Subscription {
            id: Uuid::from_u128(n),
            owner: "w".into(),
            callback_url: format!("http://example.com/{n}"),
            commands: None,
            mode,
            group_id: group.map(str::to_string),
            min_interval_seconds: 0,
            expires_at: Timestamp(i64::MAX),
        }
    }

    fn c(name: &str) -> Command {
        Command::parse(name).unwrap()
    }

    fn ids(choice: &Choice<'_>) -> Vec<u128> {
        choice.chosen.iter().map(|subscription| subscription.id.as_u128()).collect()
    }

    const T: Timestamp = Timestamp(1_700_000_000_000);

    #[test]
    fn fanout_chooses_every_subscription() {
        let all: Vec<_> = (1..=3).map(|n| subscription(n, DeliveryMode::Fanout, None)).collect();
        let wanting: Vec<_> = all.iter().collect();
        assert_eq!(ids(&Rotation::default().choose(&c("A"), &wanting, T)), vec![1, 2, 3]);
    }

    #[test]
    fn group_chooses_one_per_group_in_turn() {
        let all = [
            subscription(3, DeliveryMode::Group, Some("a")),
            subscription(1, DeliveryMode::Group, Some("a")),
            subscription(2, DeliveryMode::Group, Some("b")),
        ];
        let wanting: Vec<_> = all.iter().collect();
        let mut rotation = Rotation::default();
        let turns: Vec<_> = (0..4).map(|_| ids(&rotation.choose(&c("A"), &wanting, T))).collect();
        assert_eq!(turns, vec![vec![1, 2], vec![3, 2], vec![1, 2], vec![3, 2]]);
    }

    #[test]
    fn group_turns_are_kept_per_command() {
        let all = [
            subscription(1, DeliveryMode::Group, Some("g")),
            subscription(2, DeliveryMode::Group, Some("g")),
        ];
        let wanting: Vec<_> = all.iter().collect();
        let mut rotation = Rotation::default();
        // Notifications of A and B alternate: each command still goes
        // round the whole group.
        let turns: Vec<_> = ["A", "B", "A", "B"]
            .iter()
            .map(|command| ids(&rotation.choose(&c(command), &wanting, T)))
            .collect();
        assert_eq!(turns, vec![vec![1], vec![1], vec![2], vec![2]]);
    }

    #[test]
    fn hash_chooses_one_stable_subscription_per_minute() {
        let all: Vec<_> = (1..=3).map(|n| subscription(n, DeliveryMode::Hash, None)).collect();
        let wanting: Vec<_> = all.iter().collect();
        let mut rotation = Rotation::default();
        let minute = Timestamp(60_000 * 1_000_000); // minute 1_000_000: 1_000_000 mod 3 = 1
        assert_eq!(ids(&rotation.choose(&c("A"), &wanting, minute)), vec![2]);
        assert_eq!(ids(&rotation.choose(&c("A"), &wanting, minute.plus_seconds(59))), vec![2]);
        assert_eq!(ids(&rotation.choose(&c("A"), &wanting, minute.plus_seconds(60))), vec![3]);
    }

    #[test]
    fn a_subscription_is_not_told_twice_within_its_interval() {
        let mut throttled = subscription(1, DeliveryMode::Fanout, None);
        throttled.min_interval_seconds = 5;
        let wanting = [&throttled];
        let mut rotation = Rotation::default();
        let first = rotation.choose(&c("A"), &wanting, T);
        assert_eq!((ids(&first), first.held_until), (vec![1], None));
        let held = rotation.choose(&c("A"), &wanting, T.plus_millis(4_999));
        assert!(held.chosen.is_empty());
        assert_eq!(held.held_until, Some(T.plus_seconds(5)), "told once the interval ends");
        assert_eq!(ids(&rotation.choose(&c("A"), &wanting, T.plus_seconds(5))), vec![1]);
    }

    #[test]
    fn a_group_held_back_whole_says_when_its_first_member_is_free() {
        let mut first = subscription(1, DeliveryMode::Group, Some("g"));
        first.min_interval_seconds = 60;
        let mut second = subscription(2, DeliveryMode::Group, Some("g"));
        second.min_interval_seconds = 10;
        let mut hashed = subscription(3, DeliveryMode::Hash, None);
        hashed.min_interval_seconds = 30;
        let wanting = [&first, &second, &hashed];
        let mut rotation = Rotation::default();
        assert_eq!(ids(&rotation.choose(&c("A"), &wanting, T)), vec![1, 3]);
        assert_eq!(ids(&rotation.choose(&c("A"), &wanting, T.plus_seconds(1))), vec![2]);
        let held = rotation.choose(&c("A"), &wanting, T.plus_seconds(2));
        assert!(held.chosen.is_empty());
        assert_eq!(held.held_until, Some(T.plus_seconds(11)), "the second member, first free");
    }

    #[test]
    fn a_throttled_group_member_passes_its_turn_on() {
        let mut first = subscription(1, DeliveryMode::Group, Some("g"));
        first.min_interval_seconds = 60;
        let second = subscription(2, DeliveryMode::Group, Some("g"));
        let wanting = [&first, &second];
        let mut rotation = Rotation::default();
        assert_eq!(ids(&rotation.choose(&c("A"), &wanting, T)), vec![1]);
        assert_eq!(ids(&rotation.choose(&c("A"), &wanting, T.plus_seconds(1))), vec![2]);
        assert_eq!(ids(&rotation.choose(&c("A"), &wanting, T.plus_seconds(2))), vec![2]);
    }

    #[test]
    fn wants_only_its_commands_until_it_lapses() {
        let mut only_a = subscription(1, DeliveryMode::Fanout, None);
        only_a.commands = Some(vec![Command::parse("a").unwrap()]);
        only_a.expires_at = T;
        assert!(only_a.wants(&Command::parse("a").unwrap(), T.plus_millis(-1)));
        assert!(!only_a.wants(&Command::parse("b").unwrap(), T.plus_millis(-1)));
        assert!(!only_a.wants(&Command::parse("a").unwrap(), T));
    }
}
