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
//! member instead. The choice says who was held back that way, and when
//! each may be told ([`Held`]): the notifier looks at the queue again
//! then and, if work is still ready, tells those (and only those), so
//! that a throttled notification is late, not lost.

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
    /// Forgets subscriptions not in `live` (removed or lapsed), and the
    /// turns of groups none of them is in.
    pub fn retain(&mut self, live: &[Subscription]) {
        self.last_sent.retain(|id, _| live.iter().any(|subscription| subscription.id == *id));
        self.turns
            .retain(|(_, group), _| live.iter().any(|subscription| in_group(subscription, group)));
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
        let mut held = Vec::new();
        let mut groups: BTreeMap<&str, Vec<&Subscription>> = BTreeMap::new();
        let mut hashed = Vec::new();
        for subscription in sorted {
            match subscription.mode {
                DeliveryMode::Fanout => {
                    let free_at = self.free_at(subscription);
                    if free_at <= now {
                        chosen.push(subscription);
                    } else {
                        held.push((Held::Subscription(subscription.id), free_at));
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
                    let free_at = members.iter().map(|member| self.free_at(member)).min();
                    held.extend(free_at.map(|at| (Held::Group(group.to_string()), at)));
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
                held.push((Held::Subscription(hashed[index].id), free_at));
            }
        }
        for subscription in &chosen {
            self.last_sent.insert(subscription.id, now);
        }
        Choice { chosen, held }
    }
}

/// Whom a notification goes to, and who was held back.
#[derive(Debug)]
pub struct Choice<'a> {
    /// The subscriptions told now.
    pub chosen: Vec<&'a Subscription>,
    /// Those held back by `minIntervalSeconds`, each with when it may be
    /// told.
    pub held: Vec<(Held, Timestamp)>,
}

/// Who a notification was held back from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Held {
    /// A `fanout` or `hash` subscription.
    Subscription(Uuid),
    /// A `group`, every member of which was inside its interval.
    Group(String),
}

impl Held {
    /// Whether `subscription` is (in) what was held back.
    pub fn covers(&self, subscription: &Subscription) -> bool {
        match self {
            Self::Subscription(id) => subscription.id == *id,
            Self::Group(group) => in_group(subscription, group),
        }
    }
}

/// For each command, who its notifications were held back from, and when
/// each may be told: what the notifier looks at again once due.
#[derive(Debug, Default)]
pub struct HeldBack(HashMap<Command, HashMap<Held, Timestamp>>);

impl HeldBack {
    /// Notes a notification of `command`: those told wait no more, those
    /// held back wait until their time.
    pub fn note(&mut self, command: &Command, choice: &Choice<'_>) {
        let waiting = self.0.entry(command.clone()).or_default();
        waiting.retain(|held, _| !choice.chosen.iter().any(|told| held.covers(told)));
        waiting.extend(choice.held.iter().cloned());
        if waiting.is_empty() {
            self.0.remove(command);
        }
    }

    /// When the first of them may be told.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.0.values().flat_map(HashMap::values).min().copied()
    }

    /// Takes those whose time has come at `now`, by command.
    pub fn take_due(&mut self, now: Timestamp) -> Vec<(Command, Vec<Held>)> {
        let mut due = Vec::new();
        for (command, waiting) in &mut self.0 {
            let now_due: Vec<Held> = waiting
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(held, _)| held.clone())
                .collect();
            if !now_due.is_empty() {
                waiting.retain(|_, at| *at > now);
                due.push((command.clone(), now_due));
            }
        }
        self.0.retain(|_, waiting| !waiting.is_empty());
        due
    }
}

/// Whether `subscription` is a member of `group` (in `group` mode).
fn in_group(subscription: &Subscription, group: &str) -> bool {
    subscription.mode == DeliveryMode::Group
        && subscription.group_id.as_deref().unwrap_or_default() == group
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

    /// The notifier's loop, without the HTTP: who is told of what, when.
    #[derive(Default)]
    struct Notifier {
        rotation: Rotation,
        held: HeldBack,
        told: Vec<(String, u128, Timestamp)>,
    }

    impl Notifier {
        fn tell(
            &mut self,
            all: &[Subscription],
            command: &str,
            only: Option<&[Held]>,
            at: Timestamp,
        ) {
            let command = c(command);
            let wanting: Vec<&Subscription> = all
                .iter()
                .filter(|s| s.wants(&command, at))
                .filter(|s| only.is_none_or(|only| only.iter().any(|held| held.covers(s))))
                .collect();
            let choice = self.rotation.choose(&command, &wanting, at);
            let told = ids(&choice).into_iter().map(|id| (command.as_str().to_string(), id, at));
            self.told.extend(told);
            self.held.note(&command, &choice);
        }
    }

    #[test]
    fn work_held_back_is_told_once_to_those_held_back_only() {
        // `both` hears of A and B, `only_a` of A; both at most every 10 s.
        let mut both = subscription(1, DeliveryMode::Fanout, None);
        both.min_interval_seconds = 10;
        let mut only_a = subscription(2, DeliveryMode::Fanout, None);
        only_a.min_interval_seconds = 10;
        only_a.commands = Some(vec![c("A")]);
        let all = [both, only_a];
        let mut notifier = Notifier::default();
        // B becomes ready at T (told to `both`), A at T+5 and stays ready.
        notifier.tell(&all, "B", None, T);
        notifier.tell(&all, "A", None, T.plus_seconds(5));
        assert_eq!(notifier.held.next_due(), Some(T.plus_seconds(10)), "`both` waits");
        // However long A stays ready, each look again tells only who waited.
        while let Some(now) = notifier.held.next_due() {
            assert!(now < T.plus_seconds(3600), "still telling: {:?}", notifier.told);
            for (command, who) in notifier.held.take_due(now) {
                notifier.tell(&all, command.as_str(), Some(&who), now);
            }
        }
        let expected = vec![
            ("B".to_string(), 1, T),
            ("A".to_string(), 2, T.plus_seconds(5)),
            ("A".to_string(), 1, T.plus_seconds(10)),
        ];
        assert_eq!(notifier.told, expected);
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
        assert_eq!((ids(&first), first.held), (vec![1], vec![]));
        let held = rotation.choose(&c("A"), &wanting, T.plus_millis(4_999));
        assert!(held.chosen.is_empty());
        let expected = vec![(Held::Subscription(throttled.id), T.plus_seconds(5))];
        assert_eq!(held.held, expected, "told once the interval ends");
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
        let group = (Held::Group("g".into()), T.plus_seconds(11));
        let hash = (Held::Subscription(hashed.id), T.plus_seconds(30));
        assert_eq!(held.held, vec![group, hash], "the group when its first member is free");
        assert!(Held::Group("g".into()).covers(&first) && !Held::Group("g".into()).covers(&hashed));
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
