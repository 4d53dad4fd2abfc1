//! The operation catalogue: named, selectable groups of declarative actions, like
//! virt-sysprep's operations (the data lives in `catalogue.toml`, embedded).
//!
//! A profile that enables operations (the built-in `linux` profile and everything that
//! extends it) runs the selected ones first, in catalogue order, then its own actions.

use crate::action::ActionSpec;
use crate::error::{PrepareError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::OnceLock;

const CATALOGUE: &str = include_str!("catalogue.toml");

/// The disk-level operation that gives every LVM2 VG and PV of the image new UUIDs. It has
/// no filesystem actions: the `imgscrub` facade runs it on the staged disk.
pub const LVM_UUIDS: &str = "lvm-uuids";

/// One operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// Name used in `--operations`.
    pub name: String,
    /// One line for `list-operations`.
    pub description: String,
    /// Enabled by the `defaults` meta-name.
    pub default: bool,
    /// virt-sysprep has an operation of this name.
    #[serde(default)]
    pub virt_sysprep: bool,
    /// Spec rows (§5.2) this operation implements.
    #[serde(default)]
    pub rows: Vec<String>,
    /// A disk-level operation: it has no actions here, the caller holding the disk runs it
    /// and reports it in [`Report::disk_steps`](crate::Report::disk_steps).
    #[serde(default)]
    pub disk: bool,
    /// Its actions.
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
}

/// What `list-operations` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationInfo {
    /// Name.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// Enabled by default.
    pub default: bool,
    /// Also a virt-sysprep operation name.
    pub virt_sysprep: bool,
}

#[derive(Deserialize)]
struct Catalogue {
    operation: Vec<Operation>,
}

/// The catalogue (parsed once). It is embedded and covered by tests, so parsing cannot
/// fail at run time; if it ever did, the catalogue would be empty and `catalogue_error`
/// says why.
pub fn catalogue() -> &'static [Operation] {
    static CAT: OnceLock<Vec<Operation>> = OnceLock::new();
    CAT.get_or_init(|| {
        toml::from_str::<Catalogue>(CATALOGUE)
            .map(|c| c.operation)
            .unwrap_or_default()
    })
}

/// Parse error of the embedded catalogue, if any (for tests).
pub fn catalogue_error() -> Option<String> {
    toml::from_str::<Catalogue>(CATALOGUE)
        .err()
        .map(|e| e.to_string())
}

/// Find an operation by name.
pub fn operation(name: &str) -> Option<&'static Operation> {
    catalogue().iter().find(|o| o.name == name)
}

/// Every operation, in run order, for `imgscrub list-operations [--json]`.
pub fn list_operations() -> Vec<OperationInfo> {
    catalogue()
        .iter()
        .map(|o| OperationInfo {
            name: o.name.clone(),
            description: o.description.clone(),
            default: o.default,
            virt_sysprep: o.virt_sysprep,
        })
        .collect()
}

/// `list-operations` as text: `name * description` (`*` = default), like virt-sysprep.
pub fn list_operations_text() -> String {
    let mut s = String::new();
    for o in catalogue() {
        s.push_str(&format!(
            "{:<24} {} {}\n",
            o.name,
            if o.default { "*" } else { " " },
            o.description
        ));
    }
    s
}

/// An operation selection as `--operations` takes it: comma-separated names, `-name` to
/// remove, and the meta-names `defaults` and `all` (also `-defaults`, `-all`). Evaluated
/// left to right starting from nothing, like virt-sysprep; a selection made only of
/// removals starts from the profile's own selection instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    items: Vec<(bool, String)>,
}

impl Selection {
    /// Parse `a,b,-c`. Unknown names are an error.
    pub fn parse(s: &str) -> Result<Self> {
        let mut items = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (add, name) = match part.strip_prefix('-') {
                Some(n) => (false, n.trim()),
                None => (true, part.strip_prefix('+').unwrap_or(part).trim()),
            };
            if name != "defaults" && name != "all" && operation(name).is_none() {
                return Err(PrepareError::UnknownOperation(name.to_string()));
            }
            items.push((add, name.to_string()));
        }
        Ok(Selection { items })
    }

    /// The default selection.
    pub fn defaults() -> Self {
        Selection {
            items: vec![(true, "defaults".into())],
        }
    }

    /// Nothing selected.
    pub fn none() -> Self {
        Selection { items: Vec::new() }
    }

    /// Append the items of `other` (cumulative, like repeated `--operations`).
    pub fn extend(&mut self, other: &Selection) {
        self.items.extend(other.items.iter().cloned());
    }

    /// Whether it only removes.
    pub fn only_removals(&self) -> bool {
        !self.items.is_empty() && self.items.iter().all(|(add, _)| !add)
    }

    /// Apply to a starting set.
    pub fn apply(&self, start: BTreeSet<String>) -> BTreeSet<String> {
        let mut set = start;
        for (add, name) in &self.items {
            let names: Vec<String> = match name.as_str() {
                "all" => catalogue().iter().map(|o| o.name.clone()).collect(),
                "defaults" => catalogue()
                    .iter()
                    .filter(|o| o.default)
                    .map(|o| o.name.clone())
                    .collect(),
                n => vec![n.to_string()],
            };
            for n in names {
                if *add {
                    set.insert(n);
                } else {
                    set.remove(&n);
                }
            }
        }
        set
    }

    /// The selected operation names.
    pub fn resolve(&self) -> BTreeSet<String> {
        self.apply(BTreeSet::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_parses() {
        assert_eq!(catalogue_error(), None);
        assert!(catalogue().len() > 40);
        let names: BTreeSet<_> = catalogue().iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names.len(), catalogue().len(), "duplicate operation names");
        // Disk-level operations are opt-in and have no filesystem actions.
        let disk: Vec<_> = catalogue().iter().filter(|o| o.disk).collect();
        assert_eq!(disk.len(), 1);
        assert_eq!(disk[0].name, LVM_UUIDS);
        assert!(!disk[0].default && disk[0].actions.is_empty());
        assert!(!Selection::defaults().resolve().contains(LVM_UUIDS));
    }

    /// Every regular expression of the catalogue compiles with the crate's regex features
    /// (a bad one would only fail when its operation is planned).
    #[test]
    fn catalogue_regexes_compile() {
        use crate::action::{Action, Edit};
        for o in catalogue() {
            for a in &o.actions {
                let mut pats: Vec<String> = Vec::new();
                if let Some((_, re)) = &a.when.any_contains {
                    pats.push(format!("(?m){re}"));
                }
                let edits = match &a.action {
                    Action::Edit { edits, .. } | Action::CopyFile { edits, .. } => edits.as_slice(),
                    _ => &[],
                };
                for e in edits {
                    match e {
                        Edit::Replace { replace, until, .. } => {
                            pats.push(replace.clone());
                            pats.extend(until.clone());
                        }
                        Edit::PrefixBlock {
                            block_start,
                            block_end,
                            ..
                        } => pats.extend([block_start.clone(), block_end.clone()]),
                        Edit::PrefixLines { prefix_lines, .. } => pats.push(prefix_lines.clone()),
                        Edit::DeleteLines { delete_lines } => pats.push(delete_lines.clone()),
                        Edit::AppendIfMissing { matching, .. }
                        | Edit::PrependIfMissing { matching, .. } => pats.extend(matching.clone()),
                        Edit::RemoveHostname { .. } | Edit::Append { .. } => {}
                    }
                }
                for p in pats {
                    if let Err(e) = regex::bytes::Regex::new(&p) {
                        panic!("{}: {p:?}: {e}", o.name);
                    }
                }
            }
        }
    }

    #[test]
    fn list_operations_outputs() {
        let text = list_operations_text();
        assert_eq!(text.lines().count(), catalogue().len());
        assert!(
            text.lines()
                .any(|l| l.starts_with("machine-id") && l.contains(" * "))
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("firewall-rules") && !l.contains(" * "))
        );
        let json = serde_json::to_value(list_operations()).unwrap();
        let first = &json[0];
        assert!(first["name"].is_string() && first["description"].is_string());
        assert!(first["default"].is_boolean() && first["virt_sysprep"].is_boolean());
    }

    #[test]
    fn docs_list_every_operation() {
        let doc = include_str!("../../../../docs/operations.md");
        for o in catalogue() {
            assert!(
                doc.contains(&format!("| `{}` |", o.name)),
                "{} undocumented",
                o.name
            );
        }
    }

    #[test]
    fn selection() {
        let s = Selection::parse("defaults,-ssh-hostkeys,firewall-rules").unwrap();
        let r = s.resolve();
        assert!(r.contains("logfiles"));
        assert!(!r.contains("ssh-hostkeys"));
        assert!(r.contains("firewall-rules"));
        assert!(!r.contains("kerberos-data"));
        let all = Selection::parse("all").unwrap().resolve();
        assert_eq!(all.len(), catalogue().len());
        assert!(Selection::parse("nope").is_err());
        assert!(Selection::parse("-logfiles").unwrap().only_removals());
        assert_eq!(
            Selection::parse("machine-id").unwrap().resolve(),
            BTreeSet::from(["machine-id".to_string()])
        );
    }
}
