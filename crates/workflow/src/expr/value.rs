//! Values of the expression language and GitHub's rules for converting between them.
//!
//! GitHub's expression values are JSON-like: null, booleans, IEEE doubles, strings, arrays and
//! objects whose keys are case-insensitive. Conversions follow JavaScript's (`Number("0x10")`,
//! `String(1e21)`), because GitHub's evaluators do; the functions here are the one place they live.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::sync::Arc;

use indexmap::IndexMap;

/// A value. Arrays and objects are shared (`Arc`), so copying a context into many expressions is
/// cheap, and equality of two arrays or objects is identity, as GitHub defines it.
#[derive(Clone, Debug, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Arc<Vec<Value>>),
    Object(Arc<Dict>),
    /// The result of a `*` filter (`needs.*.result`): an array whose further property accesses
    /// apply to every element.
    Filtered(Arc<Vec<Value>>),
}

/// What kind a value is, as GitHub names kinds in messages and `toJSON` of type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Null => "Null",
            Kind::Boolean => "Boolean",
            Kind::Number => "Number",
            Kind::String => "String",
            Kind::Array => "Array",
            Kind::Object => "Object",
        }
    }
}

/// An object: keys keep their spelling and insertion order, lookups ignore case, and the first of
/// two keys that differ only in case wins.
#[derive(Clone, Debug, Default)]
pub struct Dict {
    entries: IndexMap<String, (String, Value)>,
}

impl Dict {
    pub fn new() -> Self {
        Dict::default()
    }

    /// Adds `key` unless a key equal to it ignoring case is present already.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        self.entries.entry(key.to_lowercase()).or_insert((key, value));
    }

    /// Sets `key`, replacing any value stored under it in any case.
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        self.entries.insert(key.to_lowercase(), (key, value));
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(&key.to_lowercase()).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.entries.values().map(|(k, v)| (k.as_str(), v))
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = &Value> {
        self.entries.values().map(|(_, v)| v)
    }
}

impl FromIterator<(String, Value)> for Dict {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let mut dict = Dict::new();
        for (k, v) in iter {
            dict.insert(k, v);
        }
        dict
    }
}

impl Value {
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    pub fn array(items: Vec<Value>) -> Value {
        Value::Array(Arc::new(items))
    }

    pub fn object(dict: Dict) -> Value {
        Value::Object(Arc::new(dict))
    }

    pub fn kind(&self) -> Kind {
        match self {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Boolean,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) | Value::Filtered(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }

    /// Null, booleans, numbers and strings.
    pub fn is_primitive(&self) -> bool {
        matches!(self, Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_))
    }

    /// The elements of an array (plain or filtered).
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) | Value::Filtered(items) => Some(items),
            _ => None,
        }
    }

    /// GitHub's falsy values: `null`, `false`, `0`, `-0`, `NaN` and `''`.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => !(*n == 0.0 || n.is_nan()),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Filtered(_) | Value::Object(_) => true,
        }
    }

    /// The value as a number: null is 0, booleans 1 and 0, strings as JavaScript's `Number()`
    /// reads them, arrays and objects NaN.
    pub fn to_number(&self) -> f64 {
        match self {
            Value::Null => 0.0,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => *n,
            Value::String(s) => parse_js_number(s),
            Value::Array(_) | Value::Filtered(_) | Value::Object(_) => f64::NAN,
        }
    }

    /// The value as a string: null is `''`, numbers at most 15 significant decimals, arrays and
    /// objects their kind's name.
    pub fn to_coerced_string(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => number_to_coerced_string(*n),
            Value::String(s) => s.clone(),
            other => other.kind().name().to_owned(),
        }
    }

    /// Pretty JSON with two-space indentation, as `toJSON` prints it.
    pub fn to_json_pretty(&self) -> String {
        let mut out = String::new();
        write_json(self, &mut out, Some(0));
        out
    }

    /// Compact JSON.
    pub fn to_json_compact(&self) -> String {
        let mut out = String::new();
        write_json(self, &mut out, None);
        out
    }

    /// Converts parsed JSON. Object keys that differ only in case keep the first.
    pub fn from_json(json: serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(items) => Value::array(items.into_iter().map(Value::from_json).collect()),
            serde_json::Value::Object(map) => {
                Value::object(map.into_iter().map(|(k, v)| (k, Value::from_json(v))).collect())
            }
        }
    }

    /// Converts to JSON; non-finite numbers become `null`, as in `JSON.stringify`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => {
                serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(items) | Value::Filtered(items) => items.iter().map(Value::to_json).collect(),
            Value::Object(dict) => {
                serde_json::Value::Object(dict.iter().map(|(k, v)| (k.to_owned(), v.to_json())).collect())
            }
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

/// The kinds two operands are compared as: numbers with strings compare as numbers, and null and
/// booleans become numbers against anything of another kind. Arrays and objects stay as they are.
fn coerce_pair(left: &Value, right: &Value) -> (Value, Value) {
    let (l, r) = (left.kind(), right.kind());
    if l == r {
        return (left.clone(), right.clone());
    }
    match (l, r) {
        (Kind::Number, Kind::String) => (left.clone(), Value::Number(right.to_number())),
        (Kind::String, Kind::Number) => (Value::Number(left.to_number()), right.clone()),
        (Kind::Null | Kind::Boolean, _) => coerce_pair(&Value::Number(left.to_number()), right),
        (_, Kind::Null | Kind::Boolean) => coerce_pair(left, &Value::Number(right.to_number())),
        _ => (left.clone(), right.clone()),
    }
}

/// `==`: loose equality with the coercions above; strings compare ignoring case; arrays and
/// objects are equal only to themselves; NaN equals nothing.
pub fn loose_eq(left: &Value, right: &Value) -> bool {
    match coerce_pair(left, right) {
        (Value::Null, Value::Null) => true,
        (Value::Number(a), Value::Number(b)) => a == b,
        (Value::String(a), Value::String(b)) => upper_special(&a) == upper_special(&b),
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Array(a), Value::Array(b)) | (Value::Filtered(a), Value::Filtered(b)) => Arc::ptr_eq(&a, &b),
        (Value::Object(a), Value::Object(b)) => Arc::ptr_eq(&a, &b),
        _ => false,
    }
}

/// `<` and `>`: `Some(ordering)` when the coerced operands are comparable (numbers, strings
/// ignoring case, booleans), `None` otherwise, in which case every ordering operator is false.
pub fn loose_cmp(left: &Value, right: &Value) -> Option<Ordering> {
    match coerce_pair(left, right) {
        (Value::Number(a), Value::Number(b)) => a.partial_cmp(&b),
        (Value::String(a), Value::String(b)) => {
            Some(upper_special(&a).encode_utf16().cmp(upper_special(&b).encode_utf16()))
        }
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(&b)),
        _ => None,
    }
}

/// Upper-cases for case-insensitive comparison, leaving the dotless `ı` alone (upper-casing it
/// would make it equal to `i`, which GitHub's ordinal-ignore-case comparison does not).
pub fn upper_special(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == 'ı' {
            out.push(c);
        } else {
            out.extend(c.to_uppercase());
        }
    }
    out
}

/// JavaScript's `StrWhiteSpaceChar`.
fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}'
    )
}

/// JavaScript's `Number(string)`: surrounding whitespace ignored, empty is 0, `0x`/`0o`/`0b`
/// integers (unsigned), `Infinity` with an optional sign, decimal literals with an optional sign,
/// fraction and exponent; anything else NaN.
pub fn parse_js_number(s: &str) -> f64 {
    let t = s.trim_matches(is_js_whitespace);
    if t.is_empty() {
        return 0.0;
    }
    let radix = match t.get(..2) {
        Some("0x" | "0X") => 16,
        Some("0o" | "0O") => 8,
        Some("0b" | "0B") => 2,
        _ => 10,
    };
    if radix != 10 {
        let digits = &t[2..];
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return f64::NAN;
        }
        return digits.chars().fold(0.0, |acc, c| acc * f64::from(radix) + f64::from(c.to_digit(radix).unwrap_or(0)));
    }
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    if unsigned == "Infinity" {
        return if t.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY };
    }
    if !is_decimal_literal(unsigned) {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// `digits [. digits] | . digits`, then optionally `e [+-] digits`.
fn is_decimal_literal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits == 0 {
            return false;
        }
        i += exp_digits;
    }
    i == b.len()
}

/// JavaScript's `Number.prototype.toString()`: the shortest decimal that reads back as the same
/// double, in plain notation from 1e-6 to below 1e21 and in exponent notation (`1e+21`) outside.
pub fn js_number_to_string(n: f64) -> String {
    if n.is_nan() {
        return "NaN".to_owned();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if n == 0.0 {
        return "0".to_owned();
    }
    let sign = if n < 0.0 { "-" } else { "" };
    // Rust's `{:e}` prints the shortest round-trip digits: "1.2345e3", "5e-7".
    let sci = format!("{:e}", n.abs());
    let (mantissa, exponent) = sci.split_once('e').expect("`{:e}` output always has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = i32::try_from(digits.len()).expect("at most 17 digits");
    // The value is 0.DIGITS × 10^point.
    let point = exponent + 1;
    let body = if k <= point && point <= 21 {
        format!("{digits}{}", "0".repeat(usize::try_from(point - k).unwrap_or(0)))
    } else if 0 < point && point <= 21 {
        let (int, frac) = digits.split_at(usize::try_from(point).unwrap_or(0));
        format!("{int}.{frac}")
    } else if -6 < point && point <= 0 {
        format!("0.{}{digits}", "0".repeat(usize::try_from(-point).unwrap_or(0)))
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let exp_sign = if point - 1 < 0 { '-' } else { '+' };
        format!("{first}{dot}{rest}e{exp_sign}{}", (point - 1).abs())
    };
    format!("{sign}{body}")
}

/// How GitHub turns a number into a string: at most 15 decimals (so `0.1 + 0.2` prints `0.3`),
/// then the JavaScript form.
fn number_to_coerced_string(n: f64) -> String {
    if n == 0.0 {
        return "0".to_owned();
    }
    if !n.is_finite() || n.abs() >= 1e21 {
        return js_number_to_string(n);
    }
    let fixed = format!("{n:.15}");
    js_number_to_string(fixed.parse::<f64>().unwrap_or(n))
}

/// `JSON.stringify(value, null, indent ? 2 : undefined)`.
fn write_json(value: &Value, out: &mut String, indent: Option<usize>) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_finite() => out.push_str(&js_number_to_string(*n)),
        Value::Number(_) => out.push_str("null"),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) | Value::Filtered(items) => {
            write_json_container(out, indent, '[', ']', items.iter().map(|v| (None, v)));
        }
        Value::Object(dict) => write_json_container(out, indent, '{', '}', dict.iter().map(|(k, v)| (Some(k), v))),
    }
}

fn write_json_container<'a>(
    out: &mut String,
    indent: Option<usize>,
    open: char,
    close: char,
    items: impl ExactSizeIterator<Item = (Option<&'a str>, &'a Value)>,
) {
    out.push(open);
    if items.len() == 0 {
        out.push(close);
        return;
    }
    let inner = indent.map(|i| i + 1);
    for (i, (key, item)) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let Some(level) = inner {
            out.push('\n');
            out.push_str(&"  ".repeat(level));
        }
        if let Some(key) = key {
            write_json_string(key, out);
            out.push(':');
            if inner.is_some() {
                out.push(' ');
            }
        }
        write_json(item, out, inner);
    }
    if let Some(level) = indent {
        out.push('\n');
        out.push_str(&"  ".repeat(level));
    }
    out.push(close);
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_number_strings() {
        for (n, s) in [
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (123456789.0, "123456789"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (2.5e300, "2.5e+300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (-0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(js_number_to_string(n), s, "{n:e}");
        }
    }

    #[test]
    fn coerced_number_strings_round_to_15_decimals() {
        assert_eq!(Value::Number(0.1 + 0.2).to_coerced_string(), "0.3");
        assert_eq!(Value::Number(1.0 / 3.0).to_coerced_string(), "0.333333333333333");
        assert_eq!(Value::Number(-0.0).to_coerced_string(), "0");
        assert_eq!(Value::Number(1e22).to_coerced_string(), "1e+22");
    }

    #[test]
    fn js_number_parsing() {
        for (s, n) in [
            ("", 0.0),
            ("  ", 0.0),
            (" 12 ", 12.0),
            ("-0.5", -0.5),
            ("+.5", 0.5),
            ("5.", 5.0),
            ("1e3", 1000.0),
            ("0x1F", 31.0),
            ("0o17", 15.0),
            ("0b101", 5.0),
            ("-Infinity", f64::NEG_INFINITY),
        ] {
            assert_eq!(parse_js_number(s), n, "{s:?}");
        }
        for s in ["abc", "1e", "-0x10", "0x", "inf", "NaN", "1_000", ".", "e5", "1.2.3", "infinity"] {
            assert!(parse_js_number(s).is_nan(), "{s:?}");
        }
    }

    #[test]
    fn dicts_ignore_case_and_keep_the_first_key() {
        let mut d = Dict::new();
        d.insert("Key", Value::from(1.0));
        d.insert("KEY", Value::from(2.0));
        assert_eq!(d.len(), 1);
        assert_eq!(d.get("key").map(Value::to_number), Some(1.0));
        assert_eq!(d.iter().next().map(|(k, _)| k), Some("Key"));
    }

    #[test]
    fn json_output() {
        let mut d = Dict::new();
        d.insert("a", Value::array(vec![Value::Null, Value::from(true), Value::from("x\"\n\u{1}")]));
        d.insert("b", Value::object(Dict::new()));
        let v = Value::object(d);
        assert_eq!(v.to_json_compact(), r#"{"a":[null,true,"x\"\n\u0001"],"b":{}}"#);
        assert_eq!(
            v.to_json_pretty(),
            "{\n  \"a\": [\n    null,\n    true,\n    \"x\\\"\\n\\u0001\"\n  ],\n  \"b\": {}\n}"
        );
    }
}
