//! The Lua scripts, one per transition (and a few reads), each made of
//! the shared library (`lua/lib.lua`: keys, the clock, the indexes and the
//! rules of `codeq_core::lifecycle`) followed by its own body. They run
//! with EVALSHA and are loaded again when Redis answers NOSCRIPT (after a
//! restart or `SCRIPT FLUSH`), by `redis::Script`.
//!
//! A script gets only the parts of the library it uses (see
//! [`library_for`]): Lua builds every function of a script anew on each
//! call, and what it builds it must also collect.

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
                    $($name: script(lib, include_str!(concat!("lua/", $file))),)*
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
    complete_claim => "complete_claim.lua",
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
    upgrade => "upgrade.lua",
}

fn script(lib: &str, body: &str) -> Script {
    Script::new(&format!("{}\n{body}", library_for(lib, body)))
}

/// The marker in `lib.lua` after which each top-level `local` declaration
/// is a part a script may leave out.
const PARTS_MARKER: &str = "-- @parts\n";

/// The library as `body` needs it: everything before [`PARTS_MARKER`],
/// then, in their order, the parts that `body` or another kept part names.
/// A part runs from a line starting with `local ` to the next one and
/// declares the names before its `=` (or its function's name).
fn library_for(lib: &str, body: &str) -> String {
    let Some((head, rest)) = lib.split_once(PARTS_MARKER) else { return lib.to_string() };
    let parts = split_parts(rest);
    let codes: Vec<String> = parts.iter().map(|part| without_comments(part.text)).collect();
    let body = without_comments(body);
    let mut kept = vec![false; parts.len()];
    let mut changed = true;
    while changed {
        changed = false;
        for (index, part) in parts.iter().enumerate() {
            if kept[index] {
                continue;
            }
            let named_by = |code: &str| part.names.iter().any(|name| names(code, name));
            let needed = named_by(&body)
                || codes.iter().zip(&kept).any(|(other, &keep)| keep && named_by(other));
            if needed {
                kept[index] = true;
                changed = true;
            }
        }
    }
    let mut library = head.to_string();
    for (part, _) in parts.iter().zip(&kept).filter(|(_, keep)| **keep) {
        library.push_str(part.text);
    }
    library
}

/// One top-level declaration of the library.
struct Part<'a> {
    text: &'a str,
    names: Vec<&'a str>,
}

fn split_parts(text: &str) -> Vec<Part<'_>> {
    let mut starts: Vec<usize> = text
        .match_indices("\nlocal ")
        .map(|(at, _)| at + 1)
        .chain(text.starts_with("local ").then_some(0))
        .collect();
    starts.sort_unstable();
    starts.push(text.len());
    starts
        .windows(2)
        .map(|bounds| {
            let text = &text[bounds[0]..bounds[1]];
            Part { text, names: declared(text) }
        })
        .collect()
}

/// The names a declaration starting with `local ` declares.
fn declared(part: &str) -> Vec<&str> {
    let first = part.lines().next().unwrap_or_default();
    let declaration = first.trim_start_matches("local ");
    let names = match declaration.strip_prefix("function ") {
        Some(function) => function.split('(').next().unwrap_or_default(),
        None => declaration.split('=').next().unwrap_or_default(),
    };
    names.split(',').map(str::trim).filter(|name| !name.is_empty()).collect()
}

/// Lua text without its comments, so that a name a comment mentions does
/// not bring its part in (`--` to the end of the line: the scripts have no
/// block comments and no `--` inside a string).
fn without_comments(text: &str) -> String {
    let code = text.lines().map(|line| line.split_once("--").map_or(line, |(code, _)| code));
    code.collect::<Vec<_>>().join("\n")
}

/// Whether `text` has `name` as a whole identifier.
fn names(text: &str, name: &str) -> bool {
    let identifier = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(identifier) && !after.is_some_and(identifier)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIB: &str = "local P = 1\n-- @parts\nlocal function a() return 1 end\nlocal function b() return a() end\nlocal X, Y = 1, 2\nlocal function c() return 3 end\n";

    #[test]
    fn a_script_gets_the_parts_it_names_and_what_they_name() {
        let library = library_for(LIB, "return b() + Y");
        assert_eq!(
            library,
            "local P = 1\nlocal function a() return 1 end\nlocal function b() return a() end\nlocal X, Y = 1, 2\n"
        );
    }

    #[test]
    fn a_name_inside_a_longer_identifier_does_not_count() {
        assert_eq!(library_for(LIB, "return cb + ab"), "local P = 1\n");
    }

    #[test]
    fn a_name_in_a_comment_does_not_count() {
        assert_eq!(library_for(LIB, "-- b() and Y\nreturn 1 -- a()"), "local P = 1\n");
        let lib = format!("{LIB}local function d() return 4 end -- unlike c()\n");
        let library = library_for(&lib, "return d()");
        assert_eq!(library, "local P = 1\nlocal function d() return 4 end -- unlike c()\n");
    }

    #[test]
    fn the_claim_and_result_scripts_leave_the_general_write_out() {
        let lib = include_str!("lua/lib.lua");
        let bodies = [
            include_str!("lua/claim.lua"),
            include_str!("lua/complete.lua"),
            include_str!("lua/complete_claim.lua"),
        ];
        for body in bodies {
            let library = library_for(lib, body);
            assert!(!library.contains("local function write("), "{library}");
            assert!(!library.contains("local function moved("));
        }
    }

    #[test]
    fn every_script_keeps_the_whole_head() {
        let lib = include_str!("lua/lib.lua");
        let (head, _) = lib.split_once(PARTS_MARKER).expect("lib.lua has the parts marker");
        assert!(library_for(lib, "return 1").starts_with(head));
        assert!(library_for(lib, "return emit({})").contains("local function emit("));
    }

    #[test]
    fn every_top_level_line_after_the_marker_belongs_to_a_declaration() {
        // A top-level statement that is not a `local` declaration would be
        // glued to the part before it and left out with it.
        let lib = include_str!("lua/lib.lua");
        let (_, parts) = lib.split_once(PARTS_MARKER).expect("lib.lua has the parts marker");
        for line in parts.lines().filter(|line| !line.is_empty() && !line.starts_with(' ')) {
            let allowed = ["local ", "end", "}", "--"].iter().any(|start| line.starts_with(start));
            assert!(allowed, "lib.lua: a top-level statement among the parts: {line}");
        }
    }
}
