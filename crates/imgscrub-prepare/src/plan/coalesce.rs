//! The final pass over a plan: several writes of one file become one write of its final
//! content, and writes that leave a file as it is (and their backups) go.

use super::{Planner, StepOp};
use crate::error::Result;
use crate::view::{Staged, View};
use imgscrub_fs::filesystem::FileType;
use std::collections::{BTreeSet, HashMap};

impl Planner<'_, '_> {
    /// Collapse several writes of one file into one write of its final content, and drop
    /// writes that leave a file as it already is (with their backups).
    pub(super) fn coalesce(&mut self) -> Result<()> {
        let fresh = View::new(self.v.fs());
        let mut first: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut drop_paths: BTreeSet<Vec<u8>> = BTreeSet::new();
        for (i, s) in self.steps.iter().enumerate() {
            if let StepOp::WriteFile {
                backup_of: None, ..
            } = s.op
            {
                first.entry(s.raw.clone()).or_insert(i);
            }
        }
        let mut keep = vec![true; self.steps.len()];
        for (path, &idx) in &first {
            match self.v.staged.get(path) {
                Some(Staged::File {
                    content,
                    perm,
                    uid,
                    gid,
                }) => {
                    let orig = fresh.node(path)?;
                    let same = match &orig {
                        Some(o) if o.file_type == FileType::Regular => {
                            o.perm == *perm
                                && o.uid == *uid
                                && o.gid == *gid
                                && o.size == content.len() as u64
                                && fresh.read(path).ok().flatten().as_ref() == Some(content)
                        }
                        _ => false,
                    };
                    if same {
                        drop_paths.insert(path.clone());
                        continue;
                    }
                    if let Some(s) = self.steps.get_mut(idx) {
                        s.content = content.clone();
                        s.bytes = content.len() as u64;
                        let created = orig.is_none()
                            || orig
                                .as_ref()
                                .is_some_and(|o| o.file_type != FileType::Regular);
                        s.op = StepOp::WriteFile {
                            mode: *perm,
                            uid: *uid,
                            gid: *gid,
                            created,
                            backup_of: None,
                        };
                    }
                    for (i, s) in self.steps.iter().enumerate() {
                        if i != idx
                            && s.raw == *path
                            && matches!(
                                s.op,
                                StepOp::WriteFile {
                                    backup_of: None,
                                    ..
                                }
                            )
                            && let Some(k) = keep.get_mut(i)
                        {
                            *k = false;
                        }
                    }
                }
                _ => {
                    drop_paths.insert(path.clone());
                }
            }
        }
        for (i, s) in self.steps.iter().enumerate() {
            let dropped = (drop_paths.contains(&s.raw)
                && matches!(
                    s.op,
                    StepOp::WriteFile {
                        backup_of: None,
                        ..
                    }
                ))
                || s.backup_for
                    .as_ref()
                    .is_some_and(|b| drop_paths.contains(b));
            if dropped && let Some(k) = keep.get_mut(i) {
                *k = false;
            }
        }
        let mut it = keep.into_iter();
        self.steps.retain(|_| it.next().unwrap_or(true));
        Ok(())
    }
}
