//! `Command`: the name of a queue (also called an event type).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The longest command name accepted.
pub const MAX_COMMAND_LEN: usize = 128;

/// A valid queue name: 1–128 characters of `A-Z a-z 0-9 _ - . :`.
///
/// Cheap to clone: many tasks share one command.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Command(Arc<str>);

/// Why a command name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The name is empty or longer than [`MAX_COMMAND_LEN`].
    #[error("must be 1 to {MAX_COMMAND_LEN} characters long")]
    Length,
    /// The name holds a character outside `A-Z a-z 0-9 _ - . :`.
    #[error("may only contain A-Z a-z 0-9 _ - . :")]
    Character,
}

impl Command {
    /// Checks `name` and wraps it.
    pub fn parse(name: &str) -> Result<Self, CommandError> {
        if name.is_empty() || name.len() > MAX_COMMAND_LEN {
            return Err(CommandError::Length);
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
        if !name.chars().all(allowed) {
            return Err(CommandError::Character);
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Command {
    type Error = CommandError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::parse(&name)
    }
}

impl From<Command> for String {
    fn from(command: Command) -> Self {
        command.0.to_string()
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Command {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_of_the_allowed_alphabet() {
        for name in ["GENERATE_MASTER", "a", "render.v2:thumb-small", &"x".repeat(128)] {
            assert_eq!(Command::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn refuses_empty_long_and_foreign_names() {
        assert_eq!(Command::parse(""), Err(CommandError::Length));
        assert_eq!(Command::parse(&"x".repeat(129)), Err(CommandError::Length));
        for name in ["has space", "slash/name", "star*", "ünïcode", "*"] {
            assert_eq!(Command::parse(name), Err(CommandError::Character), "{name}");
        }
    }
}
