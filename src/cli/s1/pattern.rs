//! The `%` wildcard patterns of the `iocsync s1` filters.
//!
//! Semantics (documented in the README (`iocsync s1`)):
//! - `%` matches any run of characters, including none, at the start, the end or in the middle;
//!   several `%` may appear. `\%` is a literal percent sign (URLs contain them), `\\` a backslash.
//!   No other character is special: `_`, `*`, `?` and `.` match themselves.
//! - Without `%` the pattern must equal the whole field.
//! - Matching ignores letter case (both sides are lower-cased).

/// One parsed filter pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The text as the user typed it (for messages).
    raw: String,
    /// The literal pieces between unescaped `%`, unescaped, in the user's case.
    pieces: Vec<String>,
    /// The same pieces, lower-cased (what matching compares).
    lower: Vec<String>,
}

impl Pattern {
    /// Parses a pattern; every text is a valid pattern.
    pub fn new(raw: &str) -> Pattern {
        let mut pieces = vec![String::new()];
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if matches!(chars.peek(), Some('%') | Some('\\')) => {
                    if let (Some(next), Some(last)) = (chars.next(), pieces.last_mut()) {
                        last.push(next);
                    }
                }
                '%' => pieces.push(String::new()),
                c => {
                    if let Some(last) = pieces.last_mut() {
                        last.push(c);
                    }
                }
            }
        }
        let lower = pieces.iter().map(|p| p.to_lowercase()).collect();
        Pattern {
            raw: raw.to_string(),
            pieces,
            lower,
        }
    }

    /// The text as typed.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// True when the pattern has a `%` wildcard.
    pub fn is_wild(&self) -> bool {
        self.pieces.len() > 1
    }

    /// The literal text when the pattern has no wildcard (escapes resolved).
    pub fn literal(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    /// The longest literal piece, in the user's case: every match contains it, so a server-side
    /// `__contains` filter with it narrows the listing without losing matches. `None` when the
    /// pattern has no literal text (`%`).
    pub fn contains_hint(&self) -> Option<&str> {
        self.pieces
            .iter()
            .filter(|p| !p.is_empty())
            .max_by_key(|p| p.chars().count())
            .map(String::as_str)
    }

    /// True when `field` matches, ignoring case.
    pub fn matches(&self, field: &str) -> bool {
        let field = field.to_lowercase();
        let (first, rest) = match self.lower.split_first() {
            Some(split) => split,
            None => return field.is_empty(),
        };
        let Some((last, middle)) = rest.split_last() else {
            return field == *first;
        };
        if field.len() < first.len() + last.len()
            || !field.starts_with(first.as_str())
            || !field.ends_with(last.as_str())
        {
            return false;
        }
        // Byte offsets on char boundaries: they come from matched prefixes/suffixes and `find`.
        let mut pos = first.len();
        let end = field.len() - last.len();
        for piece in middle {
            match field[pos..end].find(piece.as_str()) {
                Some(i) => pos += i + piece.len(),
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_positions() {
        let p = Pattern::new("%evil%");
        assert!(p.matches("evil.com") && p.matches("my-EVIL-site") && p.matches("evil"));
        assert!(!p.matches("good.com"));
        let start = Pattern::new("evil%");
        assert!(start.matches("evil.com") && !start.matches("notevil.com"));
        let end = Pattern::new("%.ru");
        assert!(end.matches("x.ru") && !end.matches("x.ru.com"));
        let mid = Pattern::new("a%b%c");
        assert!(mid.matches("abc") && mid.matches("aXbYc") && !mid.matches("acb"));
        assert!(
            !Pattern::new("ab%ba").matches("aba"),
            "pieces may not overlap"
        );
        assert!(Pattern::new("%").matches("") && Pattern::new("%%").matches("x"));
    }

    #[test]
    fn literal_is_whole_field_and_case_insensitive() {
        let p = Pattern::new("Evil.com");
        assert_eq!(p.literal(), Some("Evil.com"));
        assert!(p.matches("evil.com") && p.matches("EVIL.COM"));
        assert!(!p.matches("evil.com.au") && !p.matches("www.evil.com"));
        assert!(Pattern::new("a_b").matches("a_b") && !Pattern::new("a_b").matches("axb"));
        assert!(Pattern::new("").matches("") && !Pattern::new("").matches("x"));
    }

    #[test]
    fn escapes_and_hints() {
        let p = Pattern::new(r"http://x/a\%20b");
        assert_eq!(p.literal(), Some("http://x/a%20b"));
        assert!(p.matches("http://x/a%20b") && !p.matches("http://x/aXX20b"));
        assert_eq!(Pattern::new(r"a\\b").literal(), Some(r"a\b"));
        assert_eq!(Pattern::new(r"a\b").literal(), Some(r"a\b"));
        assert_eq!(
            Pattern::new("ab%Longest%c").contains_hint(),
            Some("Longest")
        );
        assert_eq!(Pattern::new("%").contains_hint(), None);
        assert!(
            Pattern::new("É%").matches("école"),
            "case folding is Unicode-aware"
        );
    }
}
