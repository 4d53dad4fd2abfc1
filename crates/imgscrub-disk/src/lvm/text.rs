//! The LVM2 metadata text format: a small tree of sections (`name { ... }`) and assignments
//! (`key = value`), values being integers, quoted strings or flat arrays of those, `#` starting
//! a comment. This is our own recursive-descent parser: bounded nesting, every error names
//! the line, and each value remembers its byte span so that a value can be replaced in the
//! original text without re-serialising the rest.

use std::ops::Range;

/// Deepest section nesting accepted (LVM2 uses 4: vg / logical_volumes / lv / segment).
const MAX_DEPTH: usize = 16;
/// Most elements in one array (a striped segment lists two per stripe).
const MAX_ARRAY: usize = 1 << 16;

/// A parse error: what was wrong, and on which line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError {
    pub line: u32,
    pub message: String,
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    /// A number with a fractional part, kept as written (LVM2 metadata does not use them).
    Float(String),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// `key = value`, with the line and the byte span of the value in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Assign {
    pub key: String,
    pub value: Value,
    pub line: u32,
    pub span: Range<usize>,
}

/// `name { ... }`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    pub name: String,
    pub line: u32,
    pub assigns: Vec<Assign>,
    pub sections: Vec<Section>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&Assign> {
        self.assigns.iter().find(|a| a.key == key)
    }
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

/// Parse a whole metadata text (it ends at the end of `text` or at its first NUL byte). The
/// result is a nameless root section.
pub fn parse(text: &[u8]) -> Result<Section, TextError> {
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let mut p = Parser {
        s: &text[..end],
        pos: 0,
        line: 1,
    };
    let mut root = Section {
        line: 1,
        ..Section::default()
    };
    p.items(&mut root, 0)?;
    Ok(root)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    line: u32,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-' | b'/')
}

impl Parser<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, TextError> {
        Err(TextError {
            line: self.line,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Skip blanks, newlines and comments.
    fn skip(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'#' => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn ident(&mut self) -> Result<String, TextError> {
        let start = self.pos;
        while self.peek().is_some_and(is_ident) {
            self.pos += 1;
        }
        if start == self.pos {
            return match self.peek() {
                Some(b) => self.err(format!("expected a name, found {:?}", b as char)),
                None => self.err("expected a name, found the end of the text"),
            };
        }
        // is_ident admits only ASCII.
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    /// Items until `}` (depth > 0) or the end of the text (depth 0).
    fn items(&mut self, sec: &mut Section, depth: usize) -> Result<(), TextError> {
        loop {
            self.skip();
            match self.peek() {
                None if depth == 0 => return Ok(()),
                None => {
                    return self.err(format!(
                        "section '{}' (line {}) is not closed",
                        sec.name, sec.line
                    ));
                }
                Some(b'}') if depth > 0 => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'}') => return self.err("'}' without a section to close"),
                Some(_) => {}
            }
            let line = self.line;
            let key = self.ident()?;
            self.skip();
            match self.peek() {
                Some(b'{') => {
                    if depth + 1 > MAX_DEPTH {
                        return self.err(format!("sections nested deeper than {MAX_DEPTH}"));
                    }
                    self.pos += 1;
                    let mut child = Section {
                        name: key,
                        line,
                        ..Section::default()
                    };
                    self.items(&mut child, depth + 1)?;
                    sec.sections.push(child);
                }
                Some(b'=') => {
                    self.pos += 1;
                    self.skip();
                    let start = self.pos;
                    let value = self.value(true)?;
                    sec.assigns.push(Assign {
                        key,
                        value,
                        line,
                        span: start..self.pos,
                    });
                }
                _ => return self.err(format!("expected '=' or '{{' after '{key}'")),
            }
        }
    }

    fn value(&mut self, array_ok: bool) -> Result<Value, TextError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'[') if array_ok => {
                self.pos += 1;
                let mut v = Vec::new();
                loop {
                    self.skip();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Value::Array(v));
                    }
                    if !v.is_empty() {
                        if self.peek() != Some(b',') {
                            return self.err("expected ',' or ']' in an array");
                        }
                        self.pos += 1;
                        self.skip();
                    }
                    if v.len() >= MAX_ARRAY {
                        return self.err(format!("array longer than {MAX_ARRAY} elements"));
                    }
                    v.push(self.value(false)?);
                }
            }
            Some(b'[') => self.err("arrays inside arrays are not part of the format"),
            Some(b) if b == b'-' || b.is_ascii_digit() => self.number(),
            Some(b) => self.err(format!("expected a value, found {:?}", b as char)),
            None => self.err("expected a value, found the end of the text"),
        }
    }

    fn number(&mut self) -> Result<Value, TextError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let digits = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if digits == self.pos {
            return self.err("'-' without digits");
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            return Ok(Value::Float(
                String::from_utf8_lossy(&self.s[start..self.pos]).into_owned(),
            ));
        }
        let text = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
        match text.parse::<i64>() {
            Ok(i) => Ok(Value::Int(i)),
            Err(_) => self.err(format!("number {text} does not fit in 64 bits")),
        }
    }

    fn string(&mut self) -> Result<Value, TextError> {
        self.pos += 1; // opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return self.err("string not closed"),
                Some(b'\n') => return self.err("string not closed before the end of the line"),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        None | Some(b'\n') => return self.err("string not closed"),
                        Some(c) => out.push(c),
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        match String::from_utf8(out) {
            Ok(s) => Ok(Value::Str(s)),
            Err(_) => self.err("string is not UTF-8"),
        }
    }
}

/// Quote `s` as the format writes strings.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"vg0 {
	id = "Xp417g-e3SJ-R3v4-t1LV-ubqw-b2Hs-OD8vCX"
	seqno = 1
	status = ["RESIZEABLE", "READ", "WRITE"]
	flags = []
	extent_size = 8192		# 4 Megabytes
	logical_volumes {
		root {
			segment1 {
				stripes = [
					"pv0", 0
				]
			}
		}
	}
}
# Generated by LVM2
contents = "Text Format Volume Group"
description = "with \"quotes\" and a \\ backslash"
"#;

    #[test]
    fn parses_the_lvm2_layout() {
        let root = parse(SAMPLE.as_bytes()).unwrap();
        let vg = root.section("vg0").unwrap();
        assert_eq!(vg.get("seqno").unwrap().value, Value::Int(1));
        let id = vg.get("id").unwrap();
        assert_eq!(
            &SAMPLE[id.span.clone()],
            "\"Xp417g-e3SJ-R3v4-t1LV-ubqw-b2Hs-OD8vCX\""
        );
        assert_eq!(id.line, 2);
        assert_eq!(vg.get("flags").unwrap().value, Value::Array(vec![]));
        let seg = vg
            .section("logical_volumes")
            .and_then(|s| s.section("root"))
            .and_then(|s| s.section("segment1"))
            .unwrap();
        assert_eq!(
            seg.get("stripes").unwrap().value,
            Value::Array(vec![Value::Str("pv0".into()), Value::Int(0)])
        );
        assert_eq!(
            root.get("description").unwrap().value,
            Value::Str("with \"quotes\" and a \\ backslash".into())
        );
        assert_eq!(
            quote("with \"quotes\" and a \\ backslash"),
            &SAMPLE[root.get("description").unwrap().span.clone()]
        );
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, what) in [
            ("a {\n b = 1\n", 3, "not closed"),
            ("a = \"x\n", 1, "not closed"),
            ("a {\n b = [1, [2]]\n}", 2, "inside arrays"),
            ("a = 99999999999999999999", 1, "64 bits"),
            ("}", 1, "without a section"),
            ("a\n\n b", 3, "expected '='"),
            ("a = ", 1, "end of the text"),
        ] {
            let e = parse(text.as_bytes()).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(what), "{text:?}: {e}");
        }
        let deep = "a {".repeat(40);
        assert!(
            parse(deep.as_bytes())
                .unwrap_err()
                .message
                .contains("deeper")
        );
    }

    #[test]
    fn stops_at_nul() {
        let root = parse(b"a = 1\n\0garbage {{{").unwrap();
        assert_eq!(root.get("a").unwrap().value, Value::Int(1));
    }
}
