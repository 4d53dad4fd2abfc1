//! A small glob matcher that expands patterns against the guest tree (through
//! [`View::list`](crate::view::View::list)), never the host.
//!
//! Supported: `*` (any run of characters except `/`), `?` (one character), `[abc]`,
//! `[a-z]`, `[!abc]`/`[^abc]` (one character in / not in the set), `{a,b}` (alternatives,
//! expanded before matching, not nested), and `**` as a whole component (zero or more
//! directories; symlinks to directories are not followed there). A leading `.` is matched
//! by wildcards too (like virt-sysprep's globs, unlike a shell's default). Components
//! without wildcards are looked up directly and may pass through symlinked directories.

use crate::error::Result;
use crate::view::{View, join};
use imgscrub_fs::filesystem::FileType;

/// Most paths one pattern may expand to (a damaged or hostile tree cannot exhaust memory).
const MAX_MATCHES: usize = 1_000_000;

/// Deepest directory recursion for `**`.
const MAX_DEPTH: usize = 64;

/// Whether `s` contains a wildcard.
pub fn has_magic(s: &[u8]) -> bool {
    s.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// Expand `{a,b}` alternatives (one level per brace pair, applied repeatedly).
pub fn expand_braces(pat: &str) -> Vec<String> {
    let Some(open) = pat.find('{') else {
        return vec![pat.to_string()];
    };
    let Some(close_rel) = pat.get(open..).and_then(|s| s.find('}')) else {
        return vec![pat.to_string()];
    };
    let close = open + close_rel;
    let (Some(head), Some(body), Some(tail)) = (
        pat.get(..open),
        pat.get(open + 1..close),
        pat.get(close + 1..),
    ) else {
        return vec![pat.to_string()];
    };
    let mut out = Vec::new();
    for alt in body.split(',') {
        out.extend(expand_braces(&format!("{head}{alt}{tail}")));
    }
    out
}

/// Match one path component against one pattern component.
pub fn match_component(pat: &[u8], name: &[u8]) -> bool {
    // Iterative matcher with backtracking on the last `*`.
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(b'?') => {
                p += 1;
                n += 1;
                continue;
            }
            Some(b'[') => {
                if let Some((matched, next)) = match_class(pat, p, name.get(n).copied()) {
                    if matched {
                        p = next;
                        n += 1;
                        continue;
                    }
                } else if name.get(n) == Some(&b'[') {
                    // Unclosed '[' is literal.
                    p += 1;
                    n += 1;
                    continue;
                }
            }
            Some(&c) if name.get(n) == Some(&c) => {
                p += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    while pat.get(p) == Some(&b'*') {
        p += 1;
    }
    p == pat.len()
}

/// Match a `[...]` class starting at `pat[start]`; returns (matched, index after `]`), or
/// `None` if the class is not closed.
fn match_class(pat: &[u8], start: usize, c: Option<u8>) -> Option<(bool, usize)> {
    let c = c?;
    let mut i = start + 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &b = pat.get(i)?;
        if b == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pat.get(i + 1) == Some(&b'-') && pat.get(i + 2).is_some_and(|&e| e != b']') {
            let e = *pat.get(i + 2)?;
            if b <= c && c <= e {
                matched = true;
            }
            i += 3;
        } else {
            if b == c {
                matched = true;
            }
            i += 1;
        }
    }
}

/// Expand an absolute pattern into the canonical paths of existing entries (the final
/// component is never followed). Results are sorted and unique.
pub fn expand(view: &View<'_>, pattern: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for pat in expand_braces(pattern) {
        let comps: Vec<&[u8]> = pat
            .as_bytes()
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if comps.is_empty() {
            continue;
        }
        walk(view, b"/".to_vec(), &comps, 0, &mut out)?;
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(
    view: &View<'_>,
    dir: Vec<u8>,
    comps: &[&[u8]],
    depth: usize,
    out: &mut Vec<Vec<u8>>,
) -> Result<()> {
    if out.len() >= MAX_MATCHES || depth > MAX_DEPTH {
        return Ok(());
    }
    let Some((&comp, rest)) = comps.split_first() else {
        return Ok(());
    };
    let last = rest.is_empty();
    if comp == b"**" {
        if last {
            // "dir/**": everything below.
            for (name, ft) in view.list(&dir)? {
                let p = join(&dir, &name);
                out.push(p.clone());
                if ft == FileType::Directory {
                    walk(view, p, comps, depth + 1, out)?;
                }
            }
            return Ok(());
        }
        // Zero directories…
        walk(view, dir.clone(), rest, depth, out)?;
        // …or one more, then still "**".
        for (name, ft) in view.list(&dir)? {
            if ft == FileType::Directory {
                walk(view, join(&dir, &name), comps, depth + 1, out)?;
            }
        }
        return Ok(());
    }
    if !has_magic(comp) {
        let literal = join(&dir, comp);
        if last {
            if let Some(c) = view.canon(&literal, false)?
                && view.node(&c)?.is_some()
            {
                out.push(c);
            }
        } else if let Some(c) = view.canon(&literal, true)?
            && view.node(&c)?.map(|n| n.file_type) == Some(FileType::Directory)
        {
            walk(view, c, rest, depth + 1, out)?;
        }
        return Ok(());
    }
    for (name, ft) in view.list(&dir)? {
        if !match_component(comp, &name) {
            continue;
        }
        let p = join(&dir, &name);
        if last {
            out.push(p);
        } else if ft == FileType::Directory {
            walk(view, p, rest, depth + 1, out)?;
        } else if ft == FileType::Symlink
            && let Some(c) = view.canon(&p, true)?
            && view.node(&c)?.map(|n| n.file_type) == Some(FileType::Directory)
        {
            walk(view, c, rest, depth + 1, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        assert!(match_component(b"ssh_host_*", b"ssh_host_rsa_key"));
        assert!(match_component(b"*.leases", b"dhclient.eth0.leases"));
        assert!(!match_component(b"*.leases", b"dhclient.eth0.lease"));
        assert!(match_component(b"ifcfg-eth?", b"ifcfg-eth0"));
        assert!(!match_component(b"ifcfg-eth?", b"ifcfg-eth10"));
        assert!(match_component(b"[SK][0-9][0-9]acpid", b"S26acpid"));
        assert!(!match_component(b"[!SK]*", b"S26acpid"));
        assert!(match_component(b"*", b".hidden"));
        assert!(match_component(b"a*b*c", b"axxbyyc"));
        assert!(!match_component(b"a*b*c", b"axxbyy"));
        assert!(match_component(b"[a", b"[a"));
    }

    #[test]
    fn braces() {
        assert_eq!(
            expand_braces("/root/{.a,.b}/{x,y}"),
            vec!["/root/.a/x", "/root/.a/y", "/root/.b/x", "/root/.b/y"]
        );
        assert_eq!(expand_braces("/plain"), vec!["/plain"]);
    }
}
