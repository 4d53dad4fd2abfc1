//! The `--edit FILE:EXPR` expression: perl's `s/REGEX/REPLACEMENT/FLAGS`.
//!
//! virt-customize hands `EXPR` to perl, once per line. Without perl, imgscrub accepts the
//! substitution forms people write and refuses the rest with a clear message:
//!
//! - any punctuation delimiter (`s/a/b/`, `s|a|b|`, `s#a#b#`) and the bracketing forms
//!   (`s{a}{b}`, `s(a)(b)`, `s<a><b>`, `s[a][b]`);
//! - flags `g` (every match), `i`, `m`, `s`, `x`;
//! - in the replacement `$1`, `${1}`, `\1`, `$&`, `$+{name}`, `\n`, `\t`, `\\`, `\$`, `\@`
//!   and an escaped delimiter.
//!
//! Refused: other perl code (`$_ = …`, `tr///`, `y///`), the `e`/`r`/`ee` flags, case
//! escapes (`\U`, `\L`, `\u`, `\l`, `\E`, `\Q`), perl variables and `@array`
//! interpolation in the replacement, and regex features the Rust `regex` engine lacks
//! (look-around, backreferences). The regex applies to each line without its line
//! terminator (perl's `$_` includes the `\n`; patterns that match the newline itself are
//! therefore not supported).

use serde::Serialize;

/// A parsed `s///` expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SedExpr {
    /// The expression as given.
    pub expr: String,
    /// The pattern in Rust `regex` syntax (inline flags included).
    pub pattern: String,
    /// The replacement in `regex`'s expansion syntax (`${1}`, `$$`).
    pub replacement: String,
    /// `g`: replace every match on a line, not only the first.
    pub global: bool,
}

fn is_regex_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}

fn closing(open: char) -> Option<char> {
    match open {
        '{' => Some('}'),
        '(' => Some(')'),
        '[' => Some(']'),
        '<' => Some('>'),
        _ => None,
    }
}

/// Split off one delimited part starting right after its opening delimiter; returns the
/// raw part (escapes untouched) and the rest after the closing delimiter.
fn take_part(s: &str, open: char, close: char) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    let mut esc = false;
    for (i, c) in s.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        if c == '\\' {
            esc = true;
        } else if c == close && depth == 0 {
            return Some((&s[..i], &s[i + c.len_utf8()..]));
        } else if open != close && c == open {
            depth += 1;
        } else if open != close && c == close {
            depth -= 1;
        }
    }
    None
}

impl SedExpr {
    /// Parse `s/REGEX/REPL/FLAGS`. The error is a message for the `--edit` option.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let t = expr.trim();
        let Some(rest) = t.strip_prefix('s') else {
            return Err(
                "only perl substitutions s/REGEX/REPLACEMENT/FLAGS can be done without perl".into(),
            );
        };
        let Some(delim) = rest.chars().next() else {
            return Err("missing delimiter after s".into());
        };
        if delim.is_alphanumeric() || delim.is_whitespace() || delim == '\\' {
            return Err(format!(
                "only perl substitutions s/REGEX/REPLACEMENT/FLAGS can be done without perl \
                 (bad delimiter {delim:?})"
            ));
        }
        let rest = &rest[delim.len_utf8()..];
        let (pat_raw, repl_raw, flags, close) = if let Some(close) = closing(delim) {
            let (pat, after) =
                take_part(rest, delim, close).ok_or("unterminated pattern (missing delimiter)")?;
            let after = after.trim_start();
            let Some(open2) = after.chars().next() else {
                return Err("missing replacement".into());
            };
            let close2 = closing(open2).unwrap_or(open2);
            let (repl, flags) = take_part(&after[open2.len_utf8()..], open2, close2)
                .ok_or("unterminated replacement (missing delimiter)")?;
            (pat, repl, flags, close2)
        } else {
            let (pat, after) =
                take_part(rest, delim, delim).ok_or("unterminated pattern (missing delimiter)")?;
            let (repl, flags) = take_part(after, delim, delim)
                .ok_or("unterminated replacement (missing delimiter)")?;
            (pat, repl, flags, delim)
        };
        let mut global = false;
        let mut inline = String::new();
        for f in flags.trim_end().chars() {
            match f {
                'g' => global = true,
                'i' | 'm' | 's' | 'x' => {
                    if !inline.contains(f) {
                        inline.push(f)
                    }
                }
                'e' | 'r' => {
                    return Err(format!(
                        "flag {f} needs perl; only g, i, m, s, x can be done without it"
                    ));
                }
                o => return Err(format!("unknown flag {o:?} (g, i, m, s, x)")),
            }
        }
        let mut pattern = String::new();
        if !inline.is_empty() {
            pattern.push_str(&format!("(?{inline})"));
        }
        pattern.push_str(&unescape_pattern(pat_raw, delim, close));
        if let Err(e) = regex::bytes::Regex::new(&pattern) {
            let msg = e.to_string();
            let hint = if pat_raw.contains("(?=")
                || pat_raw.contains("(?!")
                || pat_raw.contains("(?<=")
                || pat_raw.contains("(?<!")
            {
                " (look-around is not supported)"
            } else if pat_raw.contains("\\1") || pat_raw.contains("\\2") {
                " (backreferences are not supported)"
            } else {
                ""
            };
            let first = msg.lines().last().unwrap_or("").trim();
            return Err(format!("bad regular expression {pat_raw:?}{hint}: {first}"));
        }
        let replacement = translate_replacement(repl_raw, delim, close)?;
        Ok(SedExpr {
            expr: expr.to_string(),
            pattern,
            replacement,
            global,
        })
    }

    /// The compiled regex.
    pub fn regex(&self) -> Result<regex::bytes::Regex, regex::Error> {
        regex::bytes::Regex::new(&self.pattern)
    }

    /// Apply to a whole file: every line (without its `\n` or `\r\n`) is substituted.
    pub fn apply(&self, re: &regex::bytes::Regex, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        for chunk in data.split_inclusive(|&b| b == b'\n') {
            let (body, term): (&[u8], &[u8]) = if let Some(b) = chunk.strip_suffix(b"\r\n") {
                (b, b"\r\n")
            } else if let Some(b) = chunk.strip_suffix(b"\n") {
                (b, b"\n")
            } else {
                (chunk, b"")
            };
            let rep = self.replacement.as_bytes();
            let new = if self.global {
                re.replace_all(body, rep)
            } else {
                re.replace(body, rep)
            };
            out.extend_from_slice(&new);
            out.extend_from_slice(term);
        }
        out
    }
}

fn unescape_pattern(raw: &str, open: char, close: char) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some(n) if (n == open || n == close) && !is_regex_meta(n) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn push_literal(out: &mut String, c: char) {
    if c == '$' {
        out.push_str("$$");
    } else {
        out.push(c);
    }
}

fn translate_replacement(raw: &str, open: char, close: char) -> Result<String, String> {
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let Some(&n) = chars.get(i + 1) else {
                    out.push('\\');
                    break;
                };
                i += 2;
                match n {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '0' => out.push('\0'),
                    '1'..='9' => out.push_str(&format!("${{{n}}}")),
                    'u' | 'l' | 'U' | 'L' | 'E' | 'Q' => {
                        return Err(format!(
                            "the case escape \\{n} in the replacement needs perl"
                        ));
                    }
                    n if n.is_ascii_alphanumeric() => {
                        return Err(format!("unsupported escape \\{n} in the replacement"));
                    }
                    n => push_literal(&mut out, n),
                }
                continue;
            }
            '$' => {
                let next = chars.get(i + 1).copied();
                match next {
                    Some(d) if d.is_ascii_digit() => {
                        let mut j = i + 1;
                        while j < chars.len() && chars[j].is_ascii_digit() {
                            j += 1;
                        }
                        let n: String = chars[i + 1..j].iter().collect();
                        out.push_str(&format!("${{{n}}}"));
                        i = j;
                    }
                    Some('&') => {
                        out.push_str("${0}");
                        i += 2;
                    }
                    Some('{') => {
                        let end = chars[i + 2..]
                            .iter()
                            .position(|&c| c == '}')
                            .map(|p| p + i + 2)
                            .ok_or("unterminated ${ in the replacement")?;
                        let inner: String = chars[i + 2..end].iter().collect();
                        if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_digit()) {
                            return Err(format!(
                                "${{{inner}}} is a perl variable; only numbered groups \
                                 ($1, ${{1}}) can be done without perl"
                            ));
                        }
                        out.push_str(&format!("${{{inner}}}"));
                        i = end + 1;
                    }
                    Some('+') if chars.get(i + 2) == Some(&'{') => {
                        let end = chars[i + 3..]
                            .iter()
                            .position(|&c| c == '}')
                            .map(|p| p + i + 3)
                            .ok_or("unterminated $+{ in the replacement")?;
                        let name: String = chars[i + 3..end].iter().collect();
                        if name.is_empty()
                            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        {
                            return Err(format!("bad group name $+{{{name}}}"));
                        }
                        out.push_str(&format!("${{{name}}}"));
                        i = end + 1;
                    }
                    Some(v) if v.is_alphabetic() || v == '_' => {
                        return Err(format!(
                            "${v}… is a perl variable; only numbered groups ($1) can be done \
                             without perl (write \\$ for a literal $)"
                        ));
                    }
                    _ => {
                        out.push_str("$$");
                        i += 1;
                    }
                }
            }
            '@' if chars
                .get(i + 1)
                .is_some_and(|v| v.is_alphabetic() || *v == '_' || *v == '{') =>
            {
                return Err(
                    "@… in the replacement is perl array interpolation; write \\@ for a \
                     literal @"
                        .into(),
                );
            }
            c if c == open || c == close => {
                // Unescaped delimiter inside: cannot happen for the simple form (it ended
                // the part); for brackets it is a nested pair, taken literally.
                out.push(c);
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(expr: &str, input: &str) -> String {
        let e = SedExpr::parse(expr).unwrap();
        let re = e.regex().unwrap();
        String::from_utf8(e.apply(&re, input.as_bytes())).unwrap()
    }

    #[test]
    fn simple_forms() {
        assert_eq!(run("s/^OPT=.*/OPT=ok/", "A=1\nOPT=no\n"), "A=1\nOPT=ok\n");
        assert_eq!(run("s/a/b/", "aaa\naa"), "baa\nba");
        assert_eq!(run("s/a/b/g", "aaa\naa"), "bbb\nbb");
        assert_eq!(run("s|/usr|/opt|", "/usr/bin\n"), "/opt/bin\n");
        assert_eq!(run("s#x#y#g", "xx\n"), "yy\n");
        assert_eq!(run("s{a}{b}g", "aa\n"), "bb\n");
        assert_eq!(run("s{a} {b}", "aa\n"), "ba\n");
        assert_eq!(run("s(a)(b)", "aa\n"), "ba\n");
        assert_eq!(run("  s/a/b/", "a\n"), "b\n");
    }

    #[test]
    fn groups_and_escapes() {
        assert_eq!(run("s/(\\w+)=(\\w+)/$2=$1/", "a=b\n"), "b=a\n");
        assert_eq!(run("s/(\\w+)=(\\w+)/${2}x/", "a=b\n"), "bx\n");
        assert_eq!(run("s/(a)/\\1\\1/", "a\n"), "aa\n");
        assert_eq!(run("s/a/$&$&/", "a\n"), "aa\n");
        assert_eq!(run("s/(?<k>a)/$+{k}!/", "a\n"), "a!\n");
        assert_eq!(run("s/a/\\$5/", "a\n"), "$5\n");
        assert_eq!(run("s/a/cost $ 5/", "a\n"), "cost $ 5\n");
        assert_eq!(run("s/a/x\\@y/", "a\n"), "x@y\n");
        assert_eq!(run("s/\\/usr/\\/opt/", "/usr\n"), "/opt\n");
        assert_eq!(run("s/a/b\\tc/", "a\n"), "b\tc\n");
    }

    #[test]
    fn flags() {
        assert_eq!(run("s/A/b/i", "a\n"), "b\n");
        assert_eq!(run("s/ a /b/x", "a\n"), "b\n");
    }

    #[test]
    fn crlf_is_kept() {
        assert_eq!(run("s/x$/y/", "ax\r\nbx\r\n"), "ay\r\nby\r\n");
    }

    #[test]
    fn refusals_are_clear() {
        let err = |e: &str| SedExpr::parse(e).unwrap_err();
        assert!(err("$_ = '' if /foo/").contains("only perl substitutions"));
        assert!(err("tr/a/b/").contains("only perl substitutions"));
        assert!(err("s/a/b/e").contains("needs perl"));
        assert!(err("s/a/b/q").contains("unknown flag"));
        assert!(err("s/a/\\U$1/").contains("case escape"));
        assert!(err("s/a/$foo/").contains("perl variable"));
        assert!(err("s/a/me@host/").contains("array interpolation"));
        assert!(err("s/a(?=b)/c/").contains("look-around"));
        assert!(err("s/(a)\\1/c/").contains("backreferences"));
        assert!(err("s/a/b").contains("unterminated replacement"));
        assert!(err("s/a").contains("unterminated pattern"));
        assert!(err("s/(/x/").contains("bad regular expression"));
    }
}
