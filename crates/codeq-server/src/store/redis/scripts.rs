//! The Lua scripts, one per transition (and a few reads), each made of
//! the shared library (`lua/lib.lua`: keys, the clock, the indexes and the
//! rules of `codeq_core::lifecycle`) followed by its own body. They run
//! with EVALSHA and are loaded again when Redis answers NOSCRIPT (after a
//! restart or `SCRIPT FLUSH`), by `redis::Script`.

use redis::Script;

macro_rules! scripts {
    ($($name:ident => $file:literal),* $(,)?) => {
        /// Every script, compiled once per store.
        pub struct Scripts {
            $(
                #[doc = concat!("`lua/", $file, "`")]
                pub $name: Script,
            )*
        }

        impl Scripts {
            /// Builds every script (each one's SHA-1 is computed here).
            pub fn new() -> Self {
                let lib = include_str!("lua/lib.lua");
                Self {
                    $($name: Script::new(&format!("{lib}\n{}", include_str!(concat!("lua/", $file)))),)*
                }
            }
        }
    };
}

scripts! {
    create => "create.lua",
    claim => "claim.lua",
    heartbeat => "heartbeat.lua",
    abandon => "abandon.lua",
    nack => "nack.lua",
    expire => "expire.lua",
    complete => "complete.lua",
    cancel => "cancel.lua",
    promote => "promote.lua",
    lease_ends => "lease_ends.lua",
    callbacks => "callbacks.lua",
    callback_end => "callback_end.lua",
    cleanup => "cleanup.lua",
    purge => "purge.lua",
    replay => "replay.lua",
    settings => "settings.lua",
    stats => "stats.lua",
    dead_letters => "dead_letters.lua",
    list => "list.lua",
    read => "read.lua",
    subscriptions => "subscriptions.lua",
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}

/// A script's own arguments (after the common four), as text.
#[derive(Debug, Default)]
pub struct Args(pub Vec<String>);

impl Args {
    /// No arguments yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A text argument.
    pub fn text(&mut self, value: &str) -> &mut Self {
        self.0.push(value.to_string());
        self
    }

    /// A number.
    pub fn num(&mut self, value: impl std::fmt::Display) -> &mut Self {
        self.0.push(value.to_string());
        self
    }

    /// An optional argument: empty for none, else `=` and the value (so
    /// that an empty value is told from none).
    pub fn opt(&mut self, value: Option<impl std::fmt::Display>) -> &mut Self {
        self.0.push(value.map_or_else(String::new, |value| format!("={value}")));
        self
    }
}
