//! A strict JSON reader, and the string escaping a JSON writer needs: what
//! the checkpoint header is made of.
//!
//! The reader accepts exactly the JSON of RFC 8259 and refuses, with the
//! byte offset, everything else: trailing commas, comments, leading zeros,
//! numbers outside `f64`, invalid UTF-8, control characters and lone
//! surrogates in strings, a key repeated in one object (which a lenient
//! reader resolves silently, one way or the other), nesting deeper than 128,
//! and anything but whitespace after the value.
//!
//! The test suite reads its reference files with this module too
//! (`#[path]`-included), so a few accessors exist for it alone.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt;
use std::ops::Index;

/// A parsed JSON value.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    /// A number's value, and the integer it spells when it is written
    /// without sign, fraction or exponent and fits a `u64`.
    Number(f64, Option<u64>),
    String(String),
    Array(Vec<Value>),
    /// The members in the order written; no key appears twice.
    Object(Vec<(String, Value)>),
}

/// Why the input is not JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Offset of the offending byte in the input.
    pub offset: usize,
    pub what: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

impl std::error::Error for ParseError {}

/// Nesting deeper than this is refused (it would otherwise be a stack
/// overflow away from a crash on hostile input).
const MAX_DEPTH: usize = 128;

/// Parses one JSON value that makes up the whole of `input` (whitespace
/// aside).
pub fn parse(input: &[u8]) -> Result<Value, ParseError> {
    let mut p = Parser { input, pos: 0 };
    let value = p.value(0)?;
    p.skip_whitespace();
    if p.pos != input.len() {
        return Err(p.error("trailing characters after the value"));
    }
    Ok(value)
}

/// Appends `s` to `out` as a JSON string literal: quotes, backslashes and
/// control characters escaped (`\b \t \n \f \r`, else `\u00xx`), everything
/// else as it is.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

static NULL: Value = Value::Null;

impl Value {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(x, _) => Some(*x),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(_, n) => *n,
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn is_array(&self) -> bool {
        matches!(self, Value::Array(_))
    }
}

/// `value["key"]`: the member, or `Null` when `value` is not an object or
/// has no such member.
impl Index<&str> for Value {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        self.get(key).unwrap_or(&NULL)
    }
}

/// Objects are equal when they have the same members in any order (their
/// keys are unique); numbers when their values are.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Number(a, _), Value::Number(b, _)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => a == b,
            (Value::Object(a), Value::Object(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| other.get(k) == Some(v))
            }
            _ => false,
        }
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &'static str) -> ParseError {
        ParseError {
            offset: self.pos,
            what,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `byte` (after whitespace) or fails with `what`.
    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), ParseError> {
        self.skip_whitespace();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, ParseError> {
        if self.input[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    /// Consumes the opening bracket of an array or object; returns whether
    /// `close` follows at once (an empty one, consumed too).
    fn open(&mut self, depth: usize, close: u8) -> Result<bool, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting deeper than 128"));
        }
        self.pos += 1;
        self.skip_whitespace();
        let empty = self.peek() == Some(close);
        if empty {
            self.pos += 1;
        }
        Ok(empty)
    }

    /// After an element of an array or object: consumes `,` (more follow:
    /// `true`) or `close` (the end: `false`).
    fn more(&mut self, close: u8, what: &'static str) -> Result<bool, ParseError> {
        self.skip_whitespace();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(self.error(what)),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        let mut members: Vec<(String, Value)> = Vec::new();
        if self.open(depth, b'}')? {
            return Ok(Value::Object(members));
        }
        // a set, so that an object of many members is not quadratic to check
        let mut keys = HashSet::new();
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let at = self.pos;
            let key = self.string()?;
            if !keys.insert(key.clone()) {
                return Err(ParseError {
                    offset: at,
                    what: "a key repeated in one object",
                });
            }
            self.expect(b':', "expected ':' after a key")?;
            let value = self.value(depth)?;
            members.push((key, value));
            if !self.more(b'}', "expected ',' or '}' in an object")? {
                return Ok(Value::Object(members));
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        let mut items = Vec::new();
        if self.open(depth, b']')? {
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            if !self.more(b']', "expected ',' or ']' in an array")? {
                return Ok(Value::Array(items));
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, correctly rounded
    /// to the nearest `f64`.
    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while let Some(b'0'..=b'9') = p.peek() {
                p.pos += 1;
            }
            p.pos - from
        };
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let leading_zero = self.peek() == Some(b'0');
        match digits(self) {
            0 => return Err(self.error("expected a digit")),
            n if leading_zero && n > 1 => {
                return Err(ParseError {
                    offset: start,
                    what: "a number with a leading zero",
                });
            }
            _ => {}
        }
        let mut integer = !negative;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            integer = false;
            if digits(self) == 0 {
                return Err(self.error("expected a digit after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.error("expected a digit in the exponent"));
            }
        }
        // the grammar above admits only ASCII
        let text = std::str::from_utf8(&self.input[start..self.pos]).unwrap_or_default();
        let value: f64 = text.parse().map_err(|_| ParseError {
            offset: start,
            what: "not a number",
        })?;
        if !value.is_finite() {
            return Err(ParseError {
                offset: start,
                what: "a number outside the range of f64",
            });
        }
        let exact = if integer { text.parse().ok() } else { None };
        Ok(Value::Number(value, exact))
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1; // '"'
        let mut bytes = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    break;
                }
                b'\\' => {
                    self.pos += 1;
                    let c = self.escape()?;
                    let mut buf = [0; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0..0x20 => return Err(self.error("a control character in a string")),
                _ => {
                    bytes.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(bytes).map_err(|e| ParseError {
            // the string's contents start one byte after its opening quote
            offset: self.pos - 1 - (e.as_bytes().len() - e.utf8_error().valid_up_to()),
            what: "invalid UTF-8 in a string",
        })
    }

    /// The character of the escape after a backslash.
    fn escape(&mut self) -> Result<char, ParseError> {
        let Some(b) = self.peek() else {
            return Err(self.error("unterminated string"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let at = self.pos - 2;
                let lone = ParseError {
                    offset: at,
                    what: "a lone surrogate in a \\u escape",
                };
                let first = self.hex4()?;
                let code = match first {
                    0xD800..0xDC00 => {
                        if !self.input[self.pos..].starts_with(b"\\u") {
                            return Err(lone);
                        }
                        self.pos += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..0xE000).contains(&second) {
                            return Err(lone);
                        }
                        0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                    }
                    0xDC00..0xE000 => return Err(lone),
                    c => c,
                };
                char::from_u32(code).ok_or(lone)?
            }
            _ => {
                self.pos -= 1;
                return Err(self.error("an unknown escape in a string"));
            }
        })
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|b| (b as char).to_digit(16))
                .ok_or_else(|| self.error("expected four hex digits in a \\u escape"))?;
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ParseError {
        parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn reads_every_kind_of_value() {
        let v = parse(
            r#" {"a": [1, -2.5e-3, 0, 1E2, 18446744073709551615, 18446744073709551616],
                 "b": {"c": null, "d": true, "e": false},
                 "s": "q\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00 \u00041", "u": "日本"} "#
                .as_bytes(),
        )
        .unwrap();
        let a = v["a"].as_array().unwrap();
        let numbers: Vec<f64> = a.iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(
            numbers,
            [
                1.0,
                -2.5e-3,
                0.0,
                100.0,
                18446744073709551615.0,
                18446744073709551616.0
            ]
        );
        let integers: Vec<Option<u64>> = a.iter().map(Value::as_u64).collect();
        assert_eq!(
            integers,
            [Some(1), None, Some(0), None, Some(u64::MAX), None]
        );
        assert_eq!(v["b"]["c"], Value::Null);
        assert_eq!(v["b"]["d"], Value::Bool(true));
        assert_eq!(v["b"]["e"], Value::Bool(false));
        assert_eq!(v["s"].as_str(), Some("q\"\\/\u{8}\u{c}\n\r\té😀 \u{4}1"));
        assert_eq!(v["u"].as_str(), Some("日本"));
        assert_eq!(v["missing"], Value::Null);
        assert_eq!(v["a"]["not an object"], Value::Null);
    }

    #[test]
    fn numbers_are_correctly_rounded() {
        for text in [
            "0.1",
            "2.2250738585072014e-308",
            "4.9e-324",
            "1.7976931348623157e308",
        ] {
            let v = parse(text.as_bytes()).unwrap();
            assert_eq!(v.as_f64(), Some(text.parse::<f64>().unwrap()));
        }
        assert_eq!(
            parse(b"-0").unwrap().as_f64().map(f64::to_bits),
            Some((-0.0f64).to_bits())
        );
    }

    #[test]
    fn refuses_what_is_not_json_with_the_offset() {
        let cases = [
            ("", 0, "unexpected end of input"),
            ("[1,]", 3, "expected a value"),
            ("[1 2]", 3, "expected ',' or ']' in an array"),
            ("{\"a\":1,}", 7, "expected a string key"),
            ("{\"a\" 1}", 5, "expected ':' after a key"),
            ("{\"a\":1,\"a\":2}", 7, "a key repeated in one object"),
            ("01", 0, "a number with a leading zero"),
            ("-", 1, "expected a digit"),
            ("1.", 2, "expected a digit after '.'"),
            ("1e+", 3, "expected a digit in the exponent"),
            ("1e999", 0, "a number outside the range of f64"),
            ("+1", 0, "expected a value"),
            ("NaN", 0, "expected a value"),
            ("tru", 0, "expected a value"),
            ("\"abc", 4, "unterminated string"),
            ("\"a\nb\"", 2, "a control character in a string"),
            ("\"\\x\"", 2, "an unknown escape in a string"),
            ("\"\\u12\"", 5, "expected four hex digits in a \\u escape"),
            ("\"\\ud800\"", 1, "a lone surrogate in a \\u escape"),
            ("\"\\udc00\"", 1, "a lone surrogate in a \\u escape"),
            ("\"\\ud800\\u0041\"", 1, "a lone surrogate in a \\u escape"),
            ("1 2", 2, "trailing characters after the value"),
            ("{} // comment", 3, "trailing characters after the value"),
        ];
        for (text, offset, what) in cases {
            assert_eq!(err(text), ParseError { offset, what }, "{text:?}");
        }
        assert_eq!(
            parse(b"\"ab\xff\"").unwrap_err(),
            ParseError {
                offset: 3,
                what: "invalid UTF-8 in a string"
            }
        );
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing_the_stack() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(deep(MAX_DEPTH).as_bytes()).is_ok());
        assert_eq!(err(&deep(MAX_DEPTH + 1)).what, "nesting deeper than 128");
        assert_eq!(err(&deep(1_000_000)).what, "nesting deeper than 128");
    }

    #[test]
    fn written_strings_read_back() {
        let all: String = (0u32..0x250).filter_map(char::from_u32).collect();
        for s in [
            "",
            "plain",
            "q\"b\\s",
            "\u{0}\u{1f}\u{7f}",
            "😀日本",
            all.as_str(),
        ] {
            let mut out = String::new();
            write_string(&mut out, s);
            assert_eq!(parse(out.as_bytes()).unwrap().as_str(), Some(s), "{out}");
        }
        let mut out = String::new();
        write_string(&mut out, "a\u{1}\n");
        assert_eq!(out, "\"a\\u0001\\n\"");
    }

    #[test]
    fn objects_compare_as_sets_of_members() {
        let a = parse(br#"{"x": 1, "y": [true, null]}"#).unwrap();
        let b = parse(br#"{"y": [true, null], "x": 1.0}"#).unwrap();
        let c = parse(br#"{"y": [true, null], "x": 2}"#).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, parse(br#"{"x": 1}"#).unwrap());
    }
}
