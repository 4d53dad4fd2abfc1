//! Accounts: edits of `/etc/shadow` (and later passwd, group, gshadow).

use super::Planner;
use super::text::{join_lines, lines_of};
use crate::action::WritePolicy;
use crate::error::Result;

impl Planner<'_, '_> {
    /// The `set_shadow` action: one field of a user's line in `/etc/shadow` and its backup.
    pub(super) fn act_set_shadow(
        &mut self,
        src: &str,
        user: &str,
        field: usize,
        value: &str,
    ) -> Result<()> {
        let value = self.render(value);
        for f in ["/etc/shadow", "/etc/shadow-"] {
            self.set_shadow(src, f, user, field, &value)?;
        }
        Ok(())
    }

    pub(super) fn set_shadow(
        &mut self,
        src: &str,
        file: &str,
        user: &str,
        field: usize,
        value: &str,
    ) -> Result<()> {
        let Some(c) = self.canon(file, false)? else {
            return Ok(());
        };
        let Some(old) = self.v.read(&c)? else {
            return Ok(());
        };
        if field == 0 || value.contains(':') || value.contains('\n') {
            self.warn(format!(
                "{src}: bad shadow field or value; {file} left alone"
            ));
            return Ok(());
        }
        let (mut lines, trailing) = lines_of(&old);
        let mut prefix = user.as_bytes().to_vec();
        prefix.push(b':');
        for l in &mut lines {
            if !l.starts_with(&prefix) {
                continue;
            }
            let mut fields: Vec<Vec<u8>> = l.split(|&b| b == b':').map(<[u8]>::to_vec).collect();
            while fields.len() < field {
                fields.push(Vec::new());
            }
            if let Some(f) = fields.get_mut(field - 1) {
                *f = value.as_bytes().to_vec();
            }
            *l = fields.join(&b':');
        }
        let new = join_lines(&lines, trailing);
        if new != old {
            self.write_file(src, &c, new, None, 0, 0, WritePolicy::IfExists, None)?;
        }
        Ok(())
    }
}
