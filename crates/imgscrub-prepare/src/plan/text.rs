//! Text files: the line helpers, [`Edit`] application and the `edit` action.
//!
//! Lines are bytes (guest files need not be UTF-8); a file's trailing-newline state is
//! kept through edits.

use super::Planner;
use crate::action::{Edit, WritePolicy};
use crate::error::{PrepareError, Result};
use crate::view::show;
use imgscrub_fs::filesystem::FileType;

/// Split text into lines; returns (lines, had trailing newline).
pub(super) fn lines_of(content: &[u8]) -> (Vec<Vec<u8>>, bool) {
    if content.is_empty() {
        return (Vec::new(), true);
    }
    let trailing = content.last() == Some(&b'\n');
    let body = if trailing {
        content.get(..content.len() - 1).unwrap_or_default()
    } else {
        content
    };
    (
        body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect(),
        trailing,
    )
}

pub(super) fn join_lines(lines: &[Vec<u8>], trailing: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(l);
    }
    if trailing && !lines.is_empty() {
        out.push(b'\n');
    }
    out
}

pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

impl Planner<'_, '_> {
    /// The `edit` action: apply `edits` to each file the (rendered) path names.
    pub(super) fn act_edit(
        &mut self,
        src: &str,
        path: &str,
        edits: &[Edit],
        skip_if_contains: Option<&str>,
        create: bool,
        mode: Option<u16>,
    ) -> Result<()> {
        let rendered = self.render(path);
        let targets = if crate::glob::has_magic(rendered.as_bytes()) {
            self.paths(&rendered)?
        } else {
            self.canon(&rendered, false)?.into_iter().collect()
        };
        for c in targets {
            self.edit(src, &c, edits, skip_if_contains, create, mode)?;
        }
        Ok(())
    }

    pub(super) fn edit(
        &mut self,
        src: &str,
        c: &[u8],
        edits: &[Edit],
        skip_if: Option<&str>,
        create: bool,
        mode: Option<u16>,
    ) -> Result<()> {
        let info = self.v.node(c)?;
        let old = match &info {
            Some(i) if i.file_type == FileType::Regular => match self.v.read(c) {
                Ok(Some(d)) => d,
                Ok(None) => return Ok(()),
                Err(PrepareError::TooLarge { .. }) => {
                    self.warn(format!("{src}: {} is too large to edit", show(c)));
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
            Some(i) if i.file_type == FileType::Symlink => {
                self.warn(format!(
                    "{src}: {} is a symlink; not edited (LX safety rule)",
                    show(c)
                ));
                return Ok(());
            }
            Some(_) => return Ok(()),
            None if create => Vec::new(),
            None => return Ok(()),
        };
        if let Some(marker) = skip_if
            && contains(&old, marker.as_bytes())
        {
            return Ok(());
        }
        let new = self.apply_edits(&old, edits)?;
        self.write_file(src, c, new, mode, 0, 0, WritePolicy::Always, None)
    }

    pub(super) fn apply_edits(&mut self, old: &[u8], edits: &[Edit]) -> Result<Vec<u8>> {
        let (mut lines, mut trailing) = lines_of(old);
        for e in edits {
            match e {
                Edit::Replace { replace, with } => {
                    let re = self.regex(replace)?;
                    let with = self.render(with);
                    for l in &mut lines {
                        if re.is_match(l) {
                            *l = re.replace(l, with.as_bytes()).into_owned();
                        }
                    }
                }
                Edit::PrefixBlock {
                    block_start,
                    block_end,
                    prefix,
                } => {
                    let start = self.regex(block_start)?;
                    let end = self.regex(block_end)?;
                    let mut inside = false;
                    let mut done = false;
                    for l in &mut lines {
                        if done {
                            break;
                        }
                        if !inside && start.is_match(l) {
                            inside = true;
                        } else if inside && end.is_match(l) {
                            done = true;
                            continue;
                        }
                        if inside && !l.starts_with(prefix.as_bytes()) {
                            let mut n = prefix.as_bytes().to_vec();
                            n.extend_from_slice(l);
                            *l = n;
                        }
                    }
                }
                Edit::PrefixLines {
                    prefix_lines,
                    prefix,
                } => {
                    let re = self.regex(prefix_lines)?;
                    for l in &mut lines {
                        if re.is_match(l) && !l.starts_with(prefix.as_bytes()) {
                            let mut n = prefix.as_bytes().to_vec();
                            n.extend_from_slice(l);
                            *l = n;
                        }
                    }
                }
                Edit::DeleteLines { delete_lines } => {
                    let re = self.regex(delete_lines)?;
                    lines.retain(|l| !re.is_match(l));
                }
                Edit::AppendIfMissing {
                    append_if_missing,
                    matching,
                } => {
                    let (line, present) =
                        self.line_present(&lines, append_if_missing, matching.as_deref())?;
                    if !present {
                        lines.push(line.into_bytes());
                        trailing = true;
                    }
                }
                Edit::PrependIfMissing {
                    prepend_if_missing,
                    matching,
                } => {
                    let (line, present) =
                        self.line_present(&lines, prepend_if_missing, matching.as_deref())?;
                    if !present {
                        lines.insert(0, line.into_bytes());
                        trailing = true;
                    }
                }
                Edit::Append { append } => {
                    lines.push(self.render(append).into_bytes());
                    trailing = true;
                }
                Edit::RemoveHostname { remove_hostname } => {
                    let name = self.render(remove_hostname);
                    let name = name.trim();
                    if name.is_empty() || name.starts_with("localhost") {
                        continue;
                    }
                    let short = name.split('.').next().unwrap_or(name);
                    let mut out = Vec::new();
                    for l in lines {
                        let (body, comment) = match l.iter().position(|&b| b == b'#') {
                            Some(i) => (l.get(..i).unwrap_or_default(), l.get(i..)),
                            None => (&l[..], None),
                        };
                        let fields: Vec<&[u8]> = body
                            .split(|b| b.is_ascii_whitespace())
                            .filter(|f| !f.is_empty())
                            .collect();
                        let Some((addr, names)) = fields.split_first() else {
                            out.push(l.clone());
                            continue;
                        };
                        let kept: Vec<&[u8]> = names
                            .iter()
                            .copied()
                            .filter(|n| *n != name.as_bytes() && *n != short.as_bytes())
                            .collect();
                        if kept.len() == names.len() {
                            out.push(l.clone());
                        } else if !kept.is_empty() {
                            let mut n = addr.to_vec();
                            n.push(b'\t');
                            n.extend_from_slice(&kept.join(&b' '));
                            if let Some(c) = comment {
                                n.push(b' ');
                                n.extend_from_slice(c);
                            }
                            out.push(n);
                        }
                    }
                    lines = out;
                }
            }
        }
        Ok(join_lines(&lines, trailing))
    }

    /// The rendered `template` line, and whether `lines` already has it (the same text, or a
    /// line matching `matching`).
    pub(super) fn line_present(
        &mut self,
        lines: &[Vec<u8>],
        template: &str,
        matching: Option<&str>,
    ) -> Result<(String, bool)> {
        let line = self.render(template);
        let re = matching.map(|m| self.regex(m)).transpose()?;
        let present = lines.iter().any(|l| {
            l.trim_ascii_end() == line.as_bytes() || re.as_ref().is_some_and(|r| r.is_match(l))
        });
        Ok((line, present))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_roundtrip() {
        for t in [&b""[..], b"a\nb\n", b"a\nb", b"\n\n"] {
            let (l, tr) = lines_of(t);
            assert_eq!(join_lines(&l, tr), t);
        }
    }
}
