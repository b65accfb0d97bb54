//! JSON kept as its text: payloads and results are stored and returned as
//! their sender wrote them (key order, a repeated key, a number's spelling
//! and precision), where a parsed value would sort keys, keep one of a
//! repeated key and round big numbers.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One JSON value, held as compact text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// `raw` (already checked to be one JSON value) without the whitespace
    /// between its tokens.
    pub fn compacted(raw: &RawValue) -> Self {
        let compact = compact(raw.get());
        // Removing whitespace between tokens leaves valid JSON; the
        // fallback keeps the text as sent should that ever not hold.
        Self(RawValue::from_string(compact).unwrap_or_else(|_| raw.to_owned()))
    }

    /// Parses `text` as one JSON value and keeps it as written.
    pub fn from_text(text: impl Into<String>) -> serde_json::Result<Self> {
        RawValue::from_string(text.into()).map(Self)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Whether it is a JSON object.
    pub fn is_object(&self) -> bool {
        self.as_str().starts_with('{')
    }
}

/// The value's compact text.
impl From<serde_json::Value> for JsonText {
    fn from(value: serde_json::Value) -> Self {
        // A Value always has a JSON text; `null` stands in for the
        // impossible failure.
        Self(serde_json::value::to_raw_value(&value).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }
}

/// The same text.
impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// Valid JSON text without the whitespace between its tokens (the compact
/// form the API stores and returns), keys in the sender's order.
pub fn compact(text: &str) -> String {
    let mut compact = String::with_capacity(text.len());
    // Runs of kept bytes are copied whole; every byte looked at is ASCII
    // punctuation or whitespace, so a run never splits a character.
    let mut run_start = 0;
    outside_strings(text, |at, byte| {
        if matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
            compact.push_str(&text[run_start..at]);
            run_start = at + 1;
        }
    });
    compact.push_str(&text[run_start..]);
    compact
}

/// Compact JSON `text` laid out as `serde_json::to_string_pretty` lays out
/// a value (two spaces per level, `"key": value`, `{}` and `[]` when
/// empty), its tokens untouched: a number keeps its digits, where a
/// round trip through a value would round it.
pub fn indent(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut pretty = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut run_start = 0;
    let new_line = |pretty: &mut String, depth: usize| {
        pretty.push('\n');
        pretty.extend(std::iter::repeat_n("  ", depth));
    };
    let opens_empty = |at: usize| matches!(bytes.get(at + 1), Some(b'}' | b']'));
    let closes_empty = |at: usize| matches!(at.checked_sub(1).map(|b| bytes[b]), Some(b'{' | b'['));
    outside_strings(text, |at, byte| match byte {
        b'{' | b'[' if !opens_empty(at) => {
            pretty.push_str(&text[run_start..=at]);
            depth += 1;
            new_line(&mut pretty, depth);
            run_start = at + 1;
        }
        b'}' | b']' if !closes_empty(at) => {
            pretty.push_str(&text[run_start..at]);
            depth = depth.saturating_sub(1);
            new_line(&mut pretty, depth);
            run_start = at;
        }
        b',' => {
            pretty.push_str(&text[run_start..=at]);
            new_line(&mut pretty, depth);
            run_start = at + 1;
        }
        b':' => {
            pretty.push_str(&text[run_start..=at]);
            pretty.push(' ');
            run_start = at + 1;
        }
        _ => {}
    });
    pretty.push_str(&text[run_start..]);
    pretty
}

/// Calls `visit` with each byte of JSON `text` outside its strings, and
/// its offset (strings, their quotes included, are skipped).
fn outside_strings(text: &str, mut visit: impl FnMut(usize, u8)) {
    let (mut in_string, mut escaped) = (false, false);
    for (at, &byte) in text.as_bytes().iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else {
            visit(at, byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn compact_drops_whitespace_between_tokens_only() {
        let text = " { \"a b\" : [1, 2,\n\t3], \"q\\\" x\": \" \\\\ \" , \"z\":{} } ";
        assert_eq!(compact(text), r#"{"a b":[1,2,3],"q\" x":" \\ ","z":{}}"#);
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&compact(text)).unwrap(), value);
        assert_eq!(compact("{ \"ü\" :\t\"ø x→\" }\n"), "{\"ü\":\"ø x→\"}");
    }

    #[test]
    fn indent_lays_out_as_serde_json_does_and_keeps_every_token() {
        let value = serde_json::json!({
            "a": [1, {"b": "x,:{}[]\\\"y"}, [], {}],
            "c": {"d": null, "e": [true, -1.5e3]},
            "f": {}
        });
        let compact = serde_json::to_string(&value).unwrap();
        assert_eq!(indent(&compact), serde_json::to_string_pretty(&value).unwrap());
        assert_eq!(indent("[]"), "[]");
        assert_eq!(indent("7"), "7");
        let big = r#"{"n":123456789012345678901234567890}"#;
        assert_eq!(indent(big), "{\n  \"n\": 123456789012345678901234567890\n}");
    }

    #[test]
    fn json_text_keeps_what_a_value_would_change() {
        let sent =
            r#"{ "z": 1, "big": 123456789012345678901234567890, "k": 1, "k": 2, "f": 1.50 }"#;
        let raw: Box<RawValue> = serde_json::from_str(sent).unwrap();
        let text = JsonText::compacted(&raw);
        assert_eq!(
            text.as_str(),
            r#"{"z":1,"big":123456789012345678901234567890,"k":1,"k":2,"f":1.50}"#
        );
        assert!(text.is_object());
        assert!(!JsonText::from_text("[1]").unwrap().is_object());
        let stored = serde_json::to_string(&text).unwrap();
        assert_eq!(serde_json::from_str::<JsonText>(&stored).unwrap(), text);
    }
}
