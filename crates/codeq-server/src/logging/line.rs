//! Log lines, formatted by codeQ itself: a `tracing` layer that writes
//! each event as one line of text or JSON straight into a buffer.
//!
//! `tracing_subscriber`'s formatter cost more per request than parsing
//! the request: every span's fields were formatted through `fmt::Debug`
//! on creation, and every line went through its generic writers. This
//! layer keeps a span's fields already formatted for the line (text or
//! JSON, once, when the span is created) and writes an event with plain
//! appends, into a buffer reused by the thread.
//!
//! The shapes are those of `tracing_subscriber` (the docs and the tools
//! that read them know them):
//!
//! - text: `2026-01-02T03:04:05.678901Z  INFO request{request_id="…"
//!   method="POST" route="/v1/codeq/tasks"}: codeq_server::http::observe:
//!   request status=202 latency_ms=1.234`;
//! - JSON: `{"timestamp":"…","level":"INFO","fields":{"message":"request",
//!   "status":202,…},"target":"…","span":{"request_id":"…",…,"name":"request"}}`,
//!   `span` being the innermost span.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use codeq_core::time::civil_from_days;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, span};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Where a finished line goes (the buffered sink, or stderr directly).
pub type Output = fn(&[u8]);

/// The layer: formats each event in `format` and hands the line to
/// `output`.
pub struct Lines {
    format: LogFormat,
    output: Output,
}

impl Lines {
    /// Lines in `format`, each given to `output`.
    pub fn new(format: LogFormat, output: Output) -> Self {
        Self { format, output }
    }
}

/// A span's fields, formatted for the line when the span was created
/// (text: `a=1 b="x"`; JSON: `"a":1,"b":"x"`).
struct SpanFields(String);

impl<S> Layer<S> for Lines
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::new(self.format, String::new());
        attrs.record(&mut fields);
        span.extensions_mut().insert(SpanFields(fields.out));
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let Some(SpanFields(formatted)) = extensions.get_mut::<SpanFields>() else { return };
        let mut fields = Fields::after(self.format, std::mem::take(formatted));
        values.record(&mut fields);
        *formatted = fields.out;
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        thread_local! {
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        LINE.with(|line| {
            // A log call made while formatting (from a `Debug` impl) gets
            // a buffer of its own.
            let Ok(mut line) = line.try_borrow_mut() else {
                let mut own = String::new();
                self.write_event(&mut own, event, &ctx);
                (self.output)(own.as_bytes());
                return;
            };
            line.clear();
            self.write_event(&mut line, event, &ctx);
            (self.output)(line.as_bytes());
        });
    }
}

impl Lines {
    fn write_event<S>(&self, line: &mut String, event: &Event<'_>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    {
        match self.format {
            LogFormat::Text => write_text(line, event, ctx),
            LogFormat::Json => write_json(line, event, ctx),
        }
        line.push('\n');
    }
}

fn write_text<S>(line: &mut String, event: &Event<'_>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    let meta = event.metadata();
    write_utc_now(line);
    line.push(' ');
    line.push_str(level_padded(*meta.level()));
    line.push(' ');
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope.from_root() {
            line.push_str(span.name());
            if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>()
                && !fields.is_empty()
            {
                line.push('{');
                line.push_str(fields);
                line.push('}');
            }
            line.push(':');
        }
        line.push(' ');
    }
    line.push_str(meta.target());
    line.push_str(": ");
    let mut fields = Fields::new(LogFormat::Text, std::mem::take(line));
    event.record(&mut fields);
    *line = fields.out;
}

fn write_json<S>(line: &mut String, event: &Event<'_>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    let meta = event.metadata();
    line.push_str("{\"timestamp\":\"");
    write_utc_now(line);
    line.push_str("\",\"level\":\"");
    line.push_str(meta.level().as_str());
    line.push_str("\",\"fields\":{");
    let mut fields = Fields::new(LogFormat::Json, std::mem::take(line));
    event.record(&mut fields);
    *line = fields.out;
    line.push_str("},\"target\":");
    push_json_str(line, meta.target());
    if let Some(span) = ctx.event_span(event) {
        line.push_str(",\"span\":{");
        if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>()
            && !fields.is_empty()
        {
            line.push_str(fields);
            line.push(',');
        }
        line.push_str("\"name\":");
        push_json_str(line, span.name());
        line.push('}');
    }
    line.push('}');
}

/// The level as `tracing_subscriber` prints it in text: five wide.
fn level_padded(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => " WARN",
        Level::INFO => " INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// A visitor appending fields to `out` in one format. Text: `message`
/// bare, then `name=value` separated by spaces (strings quoted). JSON:
/// `"name":value` separated by commas.
struct Fields {
    format: LogFormat,
    out: String,
    /// No field written yet (no separator before the next).
    first: bool,
}

impl Fields {
    fn new(format: LogFormat, out: String) -> Self {
        Self { format, out, first: true }
    }

    /// Fields appended after those already in `out` (a span's, recorded
    /// later).
    fn after(format: LogFormat, out: String) -> Self {
        Self { format, first: out.is_empty(), out }
    }

    /// Writes the separator and the name; returns whether the field is
    /// the text format's bare `message`.
    fn begin(&mut self, field: &Field) -> bool {
        let first = std::mem::replace(&mut self.first, false);
        match self.format {
            LogFormat::Text => {
                if !first {
                    self.out.push(' ');
                }
                if field.name() == "message" {
                    return true;
                }
                self.out.push_str(field.name());
                self.out.push('=');
            }
            LogFormat::Json => {
                if !first {
                    self.out.push(',');
                }
                push_json_str(&mut self.out, field.name());
                self.out.push(':');
            }
        }
        false
    }

    /// A value written by `write` as is (numbers, booleans).
    fn plain(&mut self, field: &Field, write: impl FnOnce(&mut String)) {
        self.begin(field);
        write(&mut self.out);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        let bare = self.begin(field);
        match self.format {
            LogFormat::Text if bare => self.out.push_str(value),
            LogFormat::Text => push_debug_str(&mut self.out, value),
            LogFormat::Json => push_json_str(&mut self.out, value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.begin(field);
        match self.format {
            // Nothing to do about a failing `Debug` impl but go on.
            LogFormat::Text => push_text_value(&mut self.out, value),
            LogFormat::Json => {
                let mut text = String::new();
                let _ = write!(text, "{value:?}");
                push_json_str(&mut self.out, &text);
            }
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.plain(field, |out| out.push_str(itoa::Buffer::new().format(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.plain(field, |out| out.push_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.plain(field, |out| out.push_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let json = self.format == LogFormat::Json;
        self.plain(field, |out| {
            if json && !value.is_finite() {
                out.push_str("null");
            } else {
                let _ = write!(out, "{value:?}");
            }
        });
    }
}

/// A formatted value of the text format: bare when it reads as one word
/// (`task_id=0196…`, `addr=127.0.0.1:8080`), else quoted, so that a value
/// with spaces or an `=` is not taken for more fields.
fn push_text_value(out: &mut String, value: &dyn fmt::Debug) {
    // Written in place, and moved into quotes only when it is not one
    // word: no allocation for an id or an address.
    let start = out.len();
    let _ = write!(out, "{value:?}");
    if !is_one_word(&out[start..]) {
        let text = out.split_off(start);
        push_debug_str(out, &text);
    }
}

/// Whether `value` can stand bare in the text format.
fn is_one_word(value: &str) -> bool {
    !value.is_empty()
        && value.chars().all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '"' | '='))
}

/// `value` quoted as `fmt::Debug` quotes it (with a fast path for text
/// that needs no escape).
fn push_debug_str(out: &mut String, value: &str) {
    if value.bytes().all(|byte| (0x20..0x7f).contains(&byte) && byte != b'"' && byte != b'\\') {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// `value` as a JSON string.
fn push_json_str(out: &mut String, value: &str) {
    out.push('"');
    let mut rest = value;
    while let Some(at) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
        out.push_str(&rest[..at]);
        let Some(c) = rest[at..].chars().next() else { break };
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            other => {
                let _ = write!(out, "\\u{:04x}", u32::from(other));
            }
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.push_str(rest);
    out.push('"');
}

/// The current UTC time as `2026-01-02T03:04:05.678901Z`.
fn write_utc_now(out: &mut String) {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    write_utc(out, since_epoch.as_secs(), since_epoch.subsec_micros());
}

/// `seconds` since the Unix epoch (and `micros`) as RFC 3339 UTC with
/// six decimals.
fn write_utc(out: &mut String, seconds: u64, micros: u32) {
    let in_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(seconds / 86_400);
    push_padded(out, year, 4);
    out.push('-');
    push_padded(out, month, 2);
    out.push('-');
    push_padded(out, day, 2);
    out.push('T');
    push_padded(out, in_day / 3600, 2);
    out.push(':');
    push_padded(out, in_day / 60 % 60, 2);
    out.push(':');
    push_padded(out, in_day % 60, 2);
    out.push('.');
    push_padded(out, u64::from(micros), 6);
    out.push('Z');
}

/// `value` in decimal, zero-padded to `width` digits.
fn push_padded(out: &mut String, value: u64, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(value);
    out.extend(std::iter::repeat_n('0', width.saturating_sub(digits.len())));
    out.push_str(digits);
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    use super::*;

    #[test]
    fn timestamps_match_the_time_crate_across_leap_years_and_centuries() {
        // 1970, 2000-02-29, 2024-12-31 23:59:59, 2100-03-01 and some.
        let samples = [0, 951_782_400, 1_735_689_599, 4_107_542_400, 1_764_959_377, 86_399];
        for seconds in samples {
            let mut ours = String::new();
            write_utc(&mut ours, seconds, 670_120);
            let whole = OffsetDateTime::from_unix_timestamp(seconds as i64)
                .unwrap()
                .format(&Rfc3339)
                .unwrap();
            let expected = format!("{}.670120Z", whole.trim_end_matches('Z'));
            assert_eq!(ours, expected, "{seconds}");
        }
    }

    #[test]
    fn a_text_value_is_bare_when_one_word_and_quoted_otherwise() {
        for (value, written) in [
            ("0196a3c2-5f1e-7d2a", "0196a3c2-5f1e-7d2a"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("connection refused (os error 111)", r#""connection refused (os error 111)""#),
            ("a=b", r#""a=b""#),
            ("say \"hi\"", r#""say \"hi\"""#),
            ("line\nbreak", r#""line\nbreak""#),
            ("", r#""""#),
        ] {
            let mut out = String::from("before ");
            push_text_value(&mut out, &tracing::field::display(value));
            assert_eq!(out, format!("before {written}"), "{value:?}");
        }
    }

    #[test]
    fn json_strings_are_escaped_and_debug_strings_quoted_as_rust_does() {
        let tricky = "a\"b\\c\nd\u{1}é";
        let mut json = String::new();
        push_json_str(&mut json, tricky);
        assert_eq!(serde_json::from_str::<String>(&json).unwrap(), tricky);
        for text in [tricky, "plain/text-1", ""] {
            let mut debug = String::new();
            push_debug_str(&mut debug, text);
            assert_eq!(debug, format!("{text:?}"));
        }
    }
}
