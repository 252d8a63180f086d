//! TLA+ values: rendered from Rust states, parsed back from TLC's output, compared
//! canonically.
//!
//! The one idea: TLC prints the same value in several shapes (a function over `1..n` as a
//! tuple `<<a, b>>`, a function over strings as a record `[f |-> a]`, other functions as
//! `(k :> v @@ ...)`), and in no fixed field order. [`TlaValue::canonical`] folds every
//! shape into one, so two values are equal exactly when TLA+ says they are.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A TLA+ value. Keep values canonical (see [`TlaValue::canonical`]) before comparing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlaValue {
    Bool(bool),
    Int(i64),
    Str(String),
    /// A model value (a bare identifier in TLC's output).
    ModelValue(String),
    /// A tuple, i.e. a function with domain `1..n`.
    Seq(Vec<TlaValue>),
    Set(BTreeSet<TlaValue>),
    /// A function whose domain is a set of strings.
    Record(BTreeMap<String, TlaValue>),
    /// Any other function.
    Function(BTreeMap<TlaValue, TlaValue>),
}

impl TlaValue {
    pub fn int(value: impl Into<i64>) -> TlaValue {
        TlaValue::Int(value.into())
    }

    pub fn str(value: &str) -> TlaValue {
        TlaValue::Str(value.to_string())
    }

    /// A record from (field, value) pairs.
    pub fn record<'a>(fields: impl IntoIterator<Item = (&'a str, TlaValue)>) -> TlaValue {
        TlaValue::Record(
            fields
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
        )
    }

    /// The one shape TLA+ equality cares about: functions over `1..n` become tuples, over
    /// strings become records, recursively.
    pub fn canonical(self) -> TlaValue {
        match self {
            TlaValue::Seq(items) => TlaValue::Seq(items.into_iter().map(Self::canonical).collect()),
            TlaValue::Set(items) => TlaValue::Set(items.into_iter().map(Self::canonical).collect()),
            TlaValue::Record(fields) => TlaValue::Record(
                fields
                    .into_iter()
                    .map(|(name, value)| (name, value.canonical()))
                    .collect(),
            ),
            TlaValue::Function(map) => Self::canonical_function(map),
            scalar => scalar,
        }
    }

    fn canonical_function(map: BTreeMap<TlaValue, TlaValue>) -> TlaValue {
        let map: BTreeMap<TlaValue, TlaValue> = map
            .into_iter()
            .map(|(key, value)| (key.canonical(), value.canonical()))
            .collect();
        let is_one_to_n = map
            .keys()
            .enumerate()
            .all(|(index, key)| *key == TlaValue::Int(index as i64 + 1));
        if is_one_to_n {
            return TlaValue::Seq(map.into_values().collect());
        }
        if map.keys().all(|key| matches!(key, TlaValue::Str(_))) {
            let fields = map.into_iter().map(|(key, value)| match key {
                TlaValue::Str(name) => (name, value),
                _ => unreachable!("checked above: every key is a string"),
            });
            return TlaValue::Record(fields.collect());
        }
        TlaValue::Function(map)
    }

    /// Parses one value as TLC prints it.
    pub fn parse(text: &str) -> Result<TlaValue, ParseError> {
        let mut parser = Parser {
            text: text.as_bytes(),
            position: 0,
        };
        let value = parser.value()?;
        parser.skip_space();
        if parser.position != parser.text.len() {
            return Err(parser.error("the end of the value"));
        }
        Ok(value.canonical())
    }
}

fn join(items: impl Iterator<Item = String>, separator: &str) -> String {
    items.collect::<Vec<_>>().join(separator)
}

impl fmt::Display for TlaValue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlaValue::Bool(true) => write!(formatter, "TRUE"),
            TlaValue::Bool(false) => write!(formatter, "FALSE"),
            TlaValue::Int(value) => write!(formatter, "{value}"),
            TlaValue::Str(value) => write!(formatter, "{value:?}"),
            TlaValue::ModelValue(name) => write!(formatter, "{name}"),
            TlaValue::Seq(items) => {
                write!(
                    formatter,
                    "<<{}>>",
                    join(items.iter().map(ToString::to_string), ", ")
                )
            }
            TlaValue::Set(items) => {
                write!(
                    formatter,
                    "{{{}}}",
                    join(items.iter().map(ToString::to_string), ", ")
                )
            }
            TlaValue::Record(fields) => write!(
                formatter,
                "[{}]",
                join(
                    fields
                        .iter()
                        .map(|(name, value)| format!("{name} |-> {value}")),
                    ", "
                )
            ),
            TlaValue::Function(map) if map.is_empty() => write!(formatter, "<<>>"),
            TlaValue::Function(map) => write!(
                formatter,
                "({})",
                join(
                    map.iter().map(|(key, value)| format!("{key} :> {value}")),
                    " @@ "
                )
            ),
        }
    }
}

impl serde::Serialize for TlaValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read TLC value: expected {expected} at byte {position} of `{text}`")]
pub struct ParseError {
    pub expected: &'static str,
    pub position: usize,
    pub text: String,
}

/// A recursive-descent reader for the subset of TLA+ values TLC prints.
struct Parser<'a> {
    text: &'a [u8],
    position: usize,
}

impl Parser<'_> {
    fn error(&self, expected: &'static str) -> ParseError {
        ParseError {
            expected,
            position: self.position,
            text: String::from_utf8_lossy(self.text).into_owned(),
        }
    }

    fn skip_space(&mut self) {
        while self
            .text
            .get(self.position)
            .is_some_and(u8::is_ascii_whitespace)
        {
            self.position += 1;
        }
    }

    /// Consumes `token` (after spaces) if it is next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.text[self.position..].starts_with(token.as_bytes()) {
            self.position += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str, expected: &'static str) -> Result<(), ParseError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn value(&mut self) -> Result<TlaValue, ParseError> {
        self.skip_space();
        if self.eat("<<") {
            let items = self.list(">>")?;
            return Ok(TlaValue::Seq(items));
        }
        if self.eat("{") {
            let items = self.list("}")?;
            return Ok(TlaValue::Set(items.into_iter().collect()));
        }
        if self.eat("[") {
            return self.record();
        }
        if self.eat("(") {
            return self.function();
        }
        match self.text.get(self.position) {
            Some(b'"') => self.string(),
            Some(byte) if byte.is_ascii_digit() || *byte == b'-' => self.integer(),
            Some(byte) if byte.is_ascii_alphabetic() || *byte == b'_' => Ok(self.word()),
            _ => Err(self.error("a value")),
        }
    }

    /// Comma-separated values up to `close`.
    fn list(&mut self, close: &str) -> Result<Vec<TlaValue>, ParseError> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(self.value()?);
            if self.eat(close) {
                return Ok(items);
            }
            self.expect(",", "`,` or the closing bracket")?;
        }
    }

    fn record(&mut self) -> Result<TlaValue, ParseError> {
        let mut fields = BTreeMap::new();
        loop {
            self.skip_space();
            let TlaValue::ModelValue(name) = self.word() else {
                return Err(self.error("a record field name"));
            };
            self.expect("|->", "`|->` after a record field name")?;
            fields.insert(name, self.value()?);
            if self.eat("]") {
                return Ok(TlaValue::Record(fields));
            }
            self.expect(",", "`,` or `]` in a record")?;
        }
    }

    /// `(k1 :> v1 @@ k2 :> v2)`.
    fn function(&mut self) -> Result<TlaValue, ParseError> {
        let mut map = BTreeMap::new();
        loop {
            let key = self.value()?;
            self.expect(":>", "`:>` in a function")?;
            map.insert(key, self.value()?);
            if self.eat(")") {
                return Ok(TlaValue::Function(map));
            }
            self.expect("@@", "`@@` or `)` in a function")?;
        }
    }

    fn string(&mut self) -> Result<TlaValue, ParseError> {
        self.position += 1;
        let mut bytes = Vec::new();
        loop {
            match self.text.get(self.position) {
                None => return Err(self.error("the closing `\"` of a string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    let escaped = *self
                        .text
                        .get(self.position + 1)
                        .ok_or_else(|| self.error("an escaped character"))?;
                    bytes.push(match escaped {
                        b'n' => b'\n',
                        b't' => b'\t',
                        other => other,
                    });
                    self.position += 2;
                }
                Some(byte) => {
                    bytes.push(*byte);
                    self.position += 1;
                }
            }
        }
        self.position += 1;
        Ok(TlaValue::Str(String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn integer(&mut self) -> Result<TlaValue, ParseError> {
        let start = self.position;
        if self.text[self.position] == b'-' {
            self.position += 1;
        }
        while self.text.get(self.position).is_some_and(u8::is_ascii_digit) {
            self.position += 1;
        }
        let digits = std::str::from_utf8(&self.text[start..self.position]).unwrap_or("");
        digits
            .parse()
            .map(TlaValue::Int)
            .map_err(|_| self.error("an integer"))
    }

    /// `TRUE`, `FALSE`, or a model value / field name.
    fn word(&mut self) -> TlaValue {
        let start = self.position;
        while self
            .text
            .get(self.position)
            .is_some_and(|byte| byte.is_ascii_alphanumeric() || *byte == b'_')
        {
            self.position += 1;
        }
        match std::str::from_utf8(&self.text[start..self.position]).unwrap_or("") {
            "TRUE" => TlaValue::Bool(true),
            "FALSE" => TlaValue::Bool(false),
            word => TlaValue::ModelValue(word.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_tlc_prints_folds_into_one() {
        let as_tuple = TlaValue::parse("<<[ver |-> 1, val |-> 2], [val |-> 0, ver |-> 0]>>");
        let as_function =
            TlaValue::parse("(2 :> [ver |-> 0, val |-> 0] @@ 1 :> [val |-> 2, ver |-> 1])");
        assert_eq!(as_tuple, as_function);
        let expected = TlaValue::Seq(vec![
            TlaValue::record([("val", TlaValue::int(2)), ("ver", TlaValue::int(1))]),
            TlaValue::record([("val", TlaValue::int(0)), ("ver", TlaValue::int(0))]),
        ]);
        assert_eq!(as_tuple.unwrap(), expected);
    }

    #[test]
    fn rendering_then_parsing_gives_the_value_back() {
        let value = TlaValue::record([
            ("phase", TlaValue::str("Dual\"Write")),
            (
                "flags",
                TlaValue::Set([TlaValue::Bool(true), TlaValue::int(-3)].into()),
            ),
            ("log", TlaValue::Seq(vec![])),
            ("who", TlaValue::ModelValue("w1".to_string())),
        ]);
        assert_eq!(TlaValue::parse(&value.to_string()).unwrap(), value);
    }

    #[test]
    fn malformed_values_say_what_was_expected_where() {
        let error = TlaValue::parse("[a |-> 1, b 2]").unwrap_err();
        assert_eq!(error.expected, "`|->` after a record field name");
        assert_eq!(error.position, 12);
        assert!(TlaValue::parse("<<1, 2").is_err());
        assert!(TlaValue::parse("1 2").is_err());
    }
}
