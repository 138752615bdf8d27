//! Reads the `errors[].detail` string of S1's whole-batch 400: a dict naming the offending items,
//! `{'errors': [{'value': ..., 'type': ...}]}`, in JSON or Python-literal quoting (S1 formats a
//! Python dict into the string). A small Python-literal reader turns the latter into JSON.

use serde_json::{Map, Value};

/// One item S1 named as invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offender {
    /// The offending value, as S1 echoed it.
    pub value: String,
    /// Its type, when S1 said.
    pub kind: Option<String>,
    /// The whole entry, compact JSON, for the dead-letter reason.
    pub entry: String,
}

/// Extracts the offenders from a detail string; `None` when the detail cannot be read or names none.
pub fn offenders(detail: &str) -> Option<Vec<Offender>> {
    let value = parse_lenient(detail)?;
    let mut out = Vec::new();
    collect(&value, &mut out);
    (!out.is_empty()).then_some(out)
}

/// Parses the detail as JSON, then as a Python literal; if text surrounds the dict (e.g.
/// `Invalid IOCs: {...}`), retries on the outermost braces.
fn parse_lenient(detail: &str) -> Option<Value> {
    let attempt = |s: &str| {
        serde_json::from_str::<Value>(s)
            .ok()
            .or_else(|| python_literal(s))
    };
    attempt(detail.trim()).or_else(|| {
        let start = detail.find('{')?;
        let end = detail.rfind('}')?;
        (start < end)
            .then(|| attempt(&detail[start..=end]))
            .flatten()
    })
}

/// Walks the value and keeps every object that has a string (or number) `value`: the dict's exact
/// nesting is unconfirmed, so we do not depend on it.
fn collect(v: &Value, out: &mut Vec<Offender>) {
    match v {
        Value::Object(map) => {
            let value = match map.get("value") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            if let Some(value) = value {
                out.push(Offender {
                    value,
                    kind: map.get("type").and_then(Value::as_str).map(str::to_string),
                    entry: Value::Object(map.clone()).to_string(),
                });
            } else {
                map.values().for_each(|c| collect(c, out));
            }
        }
        Value::Array(items) => items.iter().for_each(|c| collect(c, out)),
        _ => {}
    }
}

/// Parses a Python literal (dict, list, tuple, str, int, float, True/False/None) into JSON.
pub fn python_literal(s: &str) -> Option<Value> {
    let mut p = Py {
        s: s.as_bytes(),
        src: s,
        i: 0,
        depth: 0,
    };
    let v = p.value()?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

struct Py<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
    depth: usize,
}

impl Py<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Value> {
        // Bounded nesting: a hostile detail must not overflow the stack.
        if self.depth > 64 {
            return None;
        }
        match self.peek()? {
            b'{' => {
                self.i += 1;
                self.depth += 1;
                let mut map = Map::new();
                while !self.eat(b'}') {
                    let key = match self.value()? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    if !self.eat(b':') {
                        return None;
                    }
                    map.insert(key, self.value()?);
                    if !self.eat(b',') && self.peek() != Some(b'}') {
                        return None;
                    }
                }
                self.depth -= 1;
                Some(Value::Object(map))
            }
            open @ (b'[' | b'(') => {
                let close = if open == b'[' { b']' } else { b')' };
                self.i += 1;
                self.depth += 1;
                let mut items = Vec::new();
                while !self.eat(close) {
                    items.push(self.value()?);
                    if !self.eat(b',') && self.peek() != Some(close) {
                        return None;
                    }
                }
                self.depth -= 1;
                Some(Value::Array(items))
            }
            b'\'' | b'"' => self.string().map(Value::String),
            b'u' | b'r' | b'b' if matches!(self.s.get(self.i + 1), Some(b'\'' | b'"')) => {
                self.i += 1;
                self.string().map(Value::String)
            }
            _ => self.word(),
        }
    }

    fn string(&mut self) -> Option<String> {
        let quote = self.s[self.i];
        self.i += 1;
        let mut out = String::new();
        loop {
            // Copy the run of plain characters in one go (keeps multi-byte UTF-8 intact).
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i] != quote && self.s[self.i] != b'\\' {
                self.i += 1;
            }
            out.push_str(self.src.get(start..self.i)?);
            match self.s.get(self.i)? {
                b'\\' => {
                    let esc = *self.s.get(self.i + 1)?;
                    self.i += 2;
                    match esc {
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'x' => out.push(self.hex(2)?),
                        b'u' => out.push(self.hex(4)?),
                        b'U' => out.push(self.hex(8)?),
                        b'\\' | b'\'' | b'"' => out.push(esc as char),
                        // Unknown escapes stay literal, as in Python.
                        other => {
                            out.push('\\');
                            out.push(other as char);
                        }
                    }
                }
                _ => {
                    self.i += 1;
                    return Some(out);
                }
            }
        }
    }

    fn hex(&mut self, n: usize) -> Option<char> {
        let digits = self.src.get(self.i..self.i + n)?;
        self.i += n;
        char::from_u32(u32::from_str_radix(digits, 16).ok()?)
    }

    fn word(&mut self) -> Option<Value> {
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || b"+-._".contains(&self.s[self.i]))
        {
            self.i += 1;
        }
        let word = self.src.get(start..self.i)?;
        match word {
            "True" => Some(Value::Bool(true)),
            "False" => Some(Value::Bool(false)),
            "None" => Some(Value::Null),
            _ => serde_json::from_str::<serde_json::Number>(word)
                .ok()
                .map(Value::Number),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_and_python_details() {
        let json = r#"{"errors": [{"value": "bad.", "type": "DNS"}]}"#;
        let py = r#"{'errors': [{'value': "it's", 'type': 'URL', 'ok': False, 'n': None}, {'value': 'x\'y', 'type': 'MD5'}]}"#;
        let a = offenders(json).expect("json");
        assert_eq!(a[0].value, "bad.");
        assert_eq!(a[0].kind.as_deref(), Some("DNS"));
        let b = offenders(py).expect("python");
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].value, "it's");
        assert_eq!(b[1].value, "x'y");
        assert!(b[0].entry.contains("\"ok\":false"));
    }

    #[test]
    fn surrounding_text_and_garbage() {
        let d = "Invalid IOCs: {'errors': [{'value': u'1.2.3', 'type': 'IPV4'}]}";
        assert_eq!(offenders(d).expect("embedded")[0].value, "1.2.3");
        assert_eq!(offenders("One or more IOCs are invalid"), None);
        assert_eq!(offenders("{'errors': []}"), None);
        assert_eq!(offenders("{'errors': [{'value': 'x'"), None);
        assert_eq!(python_literal(&"[".repeat(1000)), None);
        assert_eq!(
            python_literal("('\\xe9t\\u00e9', 1.5, -2)"),
            Some(serde_json::json!(["été", 1.5, -2]))
        );
    }
}
